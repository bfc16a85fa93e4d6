"""The steps of scripts/docker_e2e.py that only a cold podman store runs (a warm store skips them),
checked here without podman: the Debian mirror read from apt's configuration, and the CA bundle
copied into a root file system that has no /etc/ssl/certs yet (debootstrap's minbase)."""

from __future__ import annotations

import importlib.util

import pytest

from serving_helpers import ROOT

spec = importlib.util.spec_from_file_location("docker_e2e", ROOT / "scripts" / "docker_e2e.py")
docker_e2e = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docker_e2e)


def test_mirror_from_deb822_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    assert docker_e2e.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_list_with_options(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/debian.gpg] https://mirror.example/debian/ bookworm main\n"
    )
    assert docker_e2e.debian_mirror(tmp_path) == "https://mirror.example/debian"


def test_no_mirror_is_a_clear_error_not_a_guessed_host(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "nodesource.sources").write_text("URIs: https://deb.nodesource.com/node_20.x\n")
    with pytest.raises(SystemExit, match=r"no Debian mirror in .*debootstrap needs one"):
        docker_e2e.debian_mirror(tmp_path)


def test_certificates_go_into_a_root_without_etc_ssl(tmp_path):
    bundle = tmp_path / "bundle.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)  # what minbase leaves: /etc, but no /etc/ssl
    copied = docker_e2e.add_host_certificates(rootfs, bundle)
    assert copied == rootfs / "etc" / "ssl" / "certs" / "ca-certificates.crt"
    assert copied.read_text() == bundle.read_text()


def test_a_store_of_its_own_reaches_every_podman_call(monkeypatch):
    monkeypatch.setenv("WHYSERVE_PODMAN_ROOT", "/var/tmp/cold")
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    assert fresh.PODMAN == ["podman", "--root", "/var/tmp/cold/storage", "--runroot", "/var/tmp/cold/run"]
    source = (ROOT / "scripts" / "docker_e2e.py").read_text()
    assert 'run(["podman"' not in source  # every call goes through PODMAN
