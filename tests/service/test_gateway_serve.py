"""The gateway as users start it: `stillroom serve` in a subprocess, and inside the daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest
from daemon_harness import DaemonHarness, free_port, wait_until
from upstream import Upstream

MESSAGES = [
    {"role": "system", "content": "Route the support ticket to one team."},
    {"role": "user", "content": "The app freezes after the install"},
]


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/stillroom/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def ask(port: int) -> str | None:
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-client", max_retries=0
    )
    return (
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        .choices[0]
        .message.content
    )


@pytest.fixture
def up() -> Iterator[Upstream]:
    with Upstream() as upstream:
        yield upstream


@pytest.fixture
def harness(daemon: DaemonHarness) -> DaemonHarness:
    return daemon  # each test writes the config it needs


def test_serve_records_calls_and_a_second_one_says_the_port_is_taken(
    harness: DaemonHarness, up: Upstream
) -> None:
    port = free_port()
    harness.write_config(gateway={"openai": {"base_url": up.url}})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stillroom",
            "serve",
            "--port",
            str(port),
            "--config",
            str(harness.config),
        ],
        env=harness.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: healthy(port) or proc.poll() is not None, what="stillroom serve")
        assert ask(port) == "technical"
        stored = wait_until(lambda: harness.events("llm.call"), what="llm.call stored")
        assert stored[0]["messages"] == MESSAGES and stored[0]["status"] == 200

        second = harness.cli("serve", "--port", str(port), "--config", str(harness.config))
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"error: port {port} on 127.0.0.1 is taken (is `stillroom daemon` running? it"
            " serves the gateway too); choose another with --port"
        )
        assert "Traceback" not in second.stderr + second.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/v1" in out
    assert str(harness.home / "config" / "token") in out
    assert os.stat(harness.home / "config" / "token").st_mode & 0o777 == 0o600


def test_the_daemon_serves_the_gateway_and_stops_it(harness: DaemonHarness, up: Upstream) -> None:
    port = free_port()
    harness.write_config(server={"port": port}, gateway={"openai": {"base_url": up.url}})
    proc = harness.start()
    assert healthy(port)
    assert ask(port) == "technical"
    (call,) = wait_until(lambda: harness.events("llm.call"), what="llm.call stored")
    assert call["answered_by"] == "upstream" and call["origin"] == "gateway"

    token = (harness.home / "config" / "token").read_text().strip()
    calls = httpx.get(
        f"http://127.0.0.1:{port}/stillroom/calls", headers={"x-stillroom-token": token}
    ).json()["calls"]
    assert [c["model"] for c in calls] == ["gpt-test"]
    (harness.downloads / "notes.txt").write_text("file events still flow\n")
    wait_until(lambda: harness.events("file.created"), what="file.created")
    assert harness.stop(proc) == 0
    assert not healthy(port)


def test_a_taken_port_leaves_the_daemon_running_without_the_gateway(
    harness: DaemonHarness,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        harness.write_config(server={"port": port})
        proc = harness.start()
        assert f"gateway not started: cannot listen on 127.0.0.1:{port}" in harness.log()
        (harness.downloads / "a.txt").write_text("hello")
        wait_until(lambda: harness.events("file.created"), what="file.created")
        assert proc.poll() is None
        assert harness.stop(proc) == 0
    assert json.loads(harness.config.read_text())["server"] == {"port": port}


def test_with_a_key_in_the_environment_clients_pass_the_printed_token(
    harness: DaemonHarness, up: Upstream
) -> None:
    port = free_port()
    harness.write_config(gateway={"openai": {"base_url": up.url}})
    env = harness.env(STILLROOM_UPSTREAM_API_KEY="sk-from-env")
    command = ["serve", "--port", str(port), "--config", str(harness.config)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillroom", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: healthy(port) or proc.poll() is not None, what="stillroom serve")
        with pytest.raises(openai.AuthenticationError) as refused:
            ask(port)
        assert "stillroom token" in refused.value.response.json()["error"]["message"]
        assert up.received == []
        token = harness.cli("token").stdout.strip()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token, max_retries=0)
        reply = client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert reply.choices[0].message.content == "technical"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    (received,) = up.received
    assert received.headers["authorization"] == "Bearer sk-from-env"
    assert token not in json.dumps(received.headers)
