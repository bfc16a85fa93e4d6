"""``whyserve demo``: a web page that shows a served model's prediction and its explanation."""

from whyserve.demo.server import DemoHandler, Upstream, make_server, read_token_file

__all__ = ["DemoHandler", "Upstream", "make_server", "read_token_file"]
