"""The whole prompt loop, as a user meets it: the official openai client calls the gateway
(served by uvicorn on 127.0.0.1) in front of a real upstream -> `stillroom detect` finds the
repeated instruction -> `stillroom distill --now` trains a shadow student -> its silent
agreement with the model earns a proposal -> accepted, the same client gets local answers
from `stillroom/<task>`, while unsure, out-of-scope and tool calls still go to the model ->
`stillroom savings` counts it all."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import openai
from daemon_harness import run_cli, wait_until
from gateway_client import gateway
from prompt_calls import INSTRUCTIONS, SYSTEM, mixed, ticket, tickets
from upstream import MODEL, Upstream, ticket_oracle

from stillroom.config import Config
from stillroom.daemon.notify import LogNotifier
from stillroom.daemon.proposals import review
from stillroom.registry import Registry
from stillroom.service.local import TaskAnswerer
from stillroom.service.students import StudentClient
from stillroom.store import Store

BY = "json_extract(payload, '$.answered_by')"
NO_AUDITS = {"gateway": {"audit_share": 0.0}}
TOOLS = [{"type": "function", "function": {"name": "route", "parameters": {"type": "object"}}}]


def ask(client: openai.OpenAI, text: str, n: int, **kw: Any) -> tuple[str, str, str | None]:
    """(answer, model, X-Stillroom-Answered-By) of one call, the n-th way of asking."""
    if n % 5 == 4:
        said = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    else:
        said = [{"role": "user", "content": f"{INSTRUCTIONS[n % 5]}\n\n{text}"}]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=said,  # type: ignore[arg-type]
        **kw,
    )
    reply = raw.parse()
    content = reply.choices[0].message.content or ""
    return content, reply.model, raw.headers.get("x-stillroom-answered-by")


def count(store: Store, sql: str) -> int:
    return int(store.query(sql)[0][0])


def test_the_prompt_loop(tmp_path: Path, store: Store, stillroom_home: Path) -> None:
    students = StudentClient()
    with Upstream() as up:
        gateway_settings = {
            "audit_share": 0.2,
            "prices": {MODEL: {"input": 1.0, "output": 2.0}},
            "openai": {"base_url": up.url},
        }
        data = {"detector": {"min_days": 1}, "gateway": gateway_settings}
        config_file = tmp_path / "config.yaml"
        config_file.write_text(json.dumps(data))
        env = {"STILLROOM_CONFIG": str(config_file)}
        config = Config.from_data(data)
        answerer = TaskAnswerer(store, students, config, rng=random.Random(3))
        try:
            with gateway(config, store, answerer) as client:
                loop(client, up, store, answerer, stillroom_home, env)
        finally:
            students.close()


def loop(
    client: openai.OpenAI,
    up: Upstream,
    store: Store,
    answerer: TaskAnswerer,
    home: Path,
    env: dict[str, str],
) -> None:
    # 1. 300 ticket calls, five ways of asking, all forwarded and recorded.
    texts = tickets(300, seed=12, mixed_every=10)
    for n, text in enumerate(texts):
        said, model, by = ask(client, text, n)
        assert model == MODEL and by is None
    wait_until(lambda: count(store, "SELECT COUNT(*) FROM events") >= 300, what="300 calls")

    # 2. Detection finds the task; distillation trains a shadow student.
    detected = run_cli("detect", home=home, **env)
    assert detected.returncode == 0, detected.stderr
    (task,) = Registry(store).tasks()
    assert f"{task.name} (queued)" in detected.stdout and task.spec["family"] == "prompt"
    # Fine-tuning the encoder takes minutes on a CPU; this test is about the loop, so the
    # frozen MiniLM's head is kept even if it misses its bar on the dev examples.
    Registry(store).update_task(task, spec={**task.spec, "setfit_pairs": 0})
    distilled = run_cli("distill", "--now", home=home, **env)
    assert distilled.returncode == 0, distilled.stderr
    assert "shadow" in distilled.stdout

    # 3. The shadow answers nothing; the model's answers judge it silently. From here on the
    # model takes a provider's time to answer.
    up.answer_delay = 0.1
    answerer.refresh()
    rng = random.Random(12)
    for n in range(24):
        said, model, by = ask(client, ticket(rng), n)
        assert model == MODEL and by is None
    wait_until(
        lambda: count(store, "SELECT COUNT(*) FROM predictions WHERE mode = 'shadow'") >= 24,
        what="24 shadow predictions",
    )
    (proposal,) = review(store, LogNotifier())
    assert proposal.text.startswith(f"I can answer {task.name} calls: ")
    accepted = run_cli("proposals", "accept", str(proposal.id), home=home, **env)
    assert accepted.returncode == 0, accepted.stderr

    # 4. Accepted: confident calls are answered locally, a share still audited.
    answerer.refresh()
    forwarded_before = len(up.chat_calls())
    asked = [ticket(rng) for _ in range(40)]
    answered = [(text, *ask(client, text, n)) for n, text in enumerate(asked)]
    local = [a for a in answered if a[3] == "local"]
    assert len(local) >= 20 and all(model == f"stillroom/{task.name}" for *_, model, _ in local)
    assert all(said == ticket_oracle([{"role": "user", "content": t}]) for t, said, *_ in local)
    assert len(up.chat_calls()) - forwarded_before == 40 - len(local)
    wait_until(lambda: count(store, "SELECT COUNT(*) FROM events") >= 364, what="364 calls")
    audited = count(store, f"SELECT COUNT(*) FROM events WHERE {BY} = 'audit'")
    assert 1 <= audited <= 40 - len(local)

    # 5. Still forwarded: an unsure ticket, an unrelated text, and a call with tools. (Asked
    # of an answerer that never audits: the gateway's may draw any call for an audit.)
    quiet = TaskAnswerer(store, answerer.students, Config.from_data(NO_AUDITS))
    unsure = next(
        t for t in (mixed(rng) for _ in range(200)) if quiet.decide(body(t)).reason == "unsure"
    )
    oven = "Preheat the oven to 200 degrees and bake the bread for forty minutes."
    assert quiet.decide(body(oven)).reason == "out of scope"
    cases: list[tuple[str, dict[str, Any]]] = [
        (unsure, {}),
        (oven, {}),
        ("I was charged twice for my order.", {"tools": TOOLS}),
    ]
    for text, extra in cases:
        said, model, by = ask(client, text, 0, **extra)
        assert (model, by) == (MODEL, None)
        assert said == ticket_oracle([{"role": "user", "content": text}])
    assert up.chat_calls()[-1].body["tools"] == TOOLS

    # 6. The ledger: every matched call counted, the audits among the forwarded.
    wait_until(lambda: count(store, "SELECT COUNT(*) FROM events") >= 367, what="367 calls")
    savings = run_cli("savings", home=home, **env)
    assert savings.returncode == 0, savings.stderr
    row = next(line for line in savings.stdout.splitlines() if task.name in line)
    cells = [c.strip() for c in re.split(r"[│|]", row) if c.strip()]
    assert cells[0] == task.name
    local_count, forwarded, audits, disagreements = (int(c) for c in cells[1:5])
    audited = count(store, f"SELECT COUNT(*) FROM events WHERE {BY} = 'audit'")  # step 5's too
    assert local_count == len(local) and audits == audited and disagreements == 0
    # The 300 first calls matched no task yet; the shadow's 24, step 4's and step 5's did.
    assert forwarded == 24 + (40 - len(local)) + 3
    assert float(cells[5]) < float(cells[6])  # local p50 ms below forwarded p50 ms
    assert float(cells[7]) > 0  # saved $
    # The tasks table judges a prompt task by its audits, not by unchecked local answers.
    listed = run_cli("tasks", home=home, **env)
    assert re.search(rf"{task.name}.*100\.0% audited \({audited}\)", listed.stdout), listed.stdout


def body(text: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{INSTRUCTIONS[0]}\n\n{text}"}],
    }
