"""The batcher of the KServe-native runtime: requests that arrive together share one
``ExplainService.handle`` call (one forward pass), each keeps its own options and reply."""

from __future__ import annotations

import asyncio

import pytest
from kserve_helpers import b64, reference_service

from serving_helpers import encoded
from whyserve.serving.batcher import Batcher
from whyserve.serving.protocol import ServingError


@pytest.fixture(scope="module")
def service():
    return reference_service()


def test_requests_that_arrive_together_run_as_one_batch(service, photos):
    calls = []
    handle = service.handle

    def counting(requests):  # the real handle, counted
        calls.append(len(requests))
        return handle(requests)

    service.handle = counting
    chelsea = b64(encoded(photos["chelsea"]))
    asked = [
        [({"body": {"image": chelsea, "target": "tabby"}}, {})],
        [({"body": {"image": chelsea, "method": "contrastive", "target": 282, "contrast": 285}}, {})],
        [({"body": {"image": chelsea, "method": "lime"}}, {}), ServingError(400, "told by the envelope")],
    ]

    async def send():
        batcher = Batcher(service, max_size=8, delay_s=0.5)
        return await asyncio.gather(*(batcher.submit(requests) for requests in asked))

    try:
        answers = asyncio.run(send())
    finally:
        del service.handle
    assert calls == [3]  # one call: the envelope's own error never reaches the service
    assert [[reply.status for reply in replies] for replies in answers] == [[200], [200], [400, 400]]
    assert answers[0][0].body["explanation"]["target"]["label"] == "tabby"
    contrastive = answers[1][0].body["explanation"]
    assert (contrastive["target"]["index"], contrastive["contrast"]["index"]) == (282, 285)
    assert "lime" in answers[2][0].body["error"]["message"]
    assert answers[2][1].body["error"]["message"] == "told by the envelope"


def test_a_full_batch_runs_without_waiting_for_the_delay(service, photos):
    chelsea = b64(encoded(photos["chelsea"]))

    async def send():
        batcher = Batcher(service, max_size=1, delay_s=60)
        return await asyncio.wait_for(batcher.submit([({"body": {"image": chelsea, "method": "none"}}, {})]), 30)

    (reply,) = asyncio.run(send())
    assert reply.status == 200 and reply.body["explanation"] is None
