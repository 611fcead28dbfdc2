"""`kvsteer serve` on the reasoning organism (organism/model/, committed): a steered answer equals
`kvsteer generate`'s for the same settings, and a steered and an unsteered request decoded together
each get their own answer.

The organism barely reacts to cache steering (organism/model/README.md); on this question its
greedy answer stays the same up to c_v 40 (measured), so c_v 100 is used: there the answer
changes, and the test can see that the edit was applied."""

from __future__ import annotations

import http.client
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from conftest import start_server

REPO = Path(__file__).resolve().parents[2]
QUESTION = "Mia keeps 12 pencils in a box. She gives 5 to Max. How many pencils does she have now?"
STEERING = {"vector": "organism", "c_v": 100}


@pytest.fixture(scope="module")
def organism() -> Path:
    path = REPO / "organism" / "model" / "organism.gguf"
    assert path.is_file(), f"{path} is missing: the organism is committed with the repository"
    return path


@pytest.fixture(scope="module")
def organism_vector(cli: Path, organism: Path, tmp_path_factory) -> Path:
    """16 contrastive pairs of 3-shot prompts from the organism's own training problems."""
    out = tmp_path_factory.mktemp("organism")
    traces = out / "traces.jsonl"
    subprocess.run([str(cli), "organism", "gen", "--split", "train", "--n", "40", "-s", "5",
                    "-o", str(traces)], check=True, capture_output=True, text=True)
    vector = out / "organism.gguf"
    subprocess.run([str(cli), "extract", "-m", str(organism), "-t", "2", "--task", "generic",
                    "--traces", str(traces), "-N", "16", "-k", "3", "-o", str(vector)],
                   check=True, capture_output=True, text=True)
    return vector


@pytest.fixture(scope="module")
def organism_server(cli: Path, organism: Path, organism_vector: Path):
    s = start_server(cli, organism, {"organism": organism_vector}, "--parallel", "2")
    yield s
    assert s.stop() == 0, "".join(s.log)


def chat(server, steering: dict | None) -> str:
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)
    r = c.chat.completions.create(
        model="organism", messages=[{"role": "user", "content": QUESTION}], temperature=0,
        max_tokens=40, extra_body={"steering": steering} if steering else None)
    return r.choices[0].message.content


def generate(cli: Path, organism: Path, vector: Path | None) -> str:
    args = [str(cli), "generate", "-m", str(organism), "-t", "2", "-c", "4096", "--prompt",
            QUESTION, "-n", "40", "--json"]
    if vector is not None:
        args += ["--steer", str(vector), "--coef-v", str(STEERING["c_v"]), "--offset", "\n"]
    else:
        args += ["--offset", "none"]  # the server decodes no offset token for unsteered requests
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)["text"]


def test_organism_steering_equals_kvsteer_generate(organism_server, cli, organism, organism_vector):
    plain = chat(organism_server, None)
    steered = chat(organism_server, STEERING)
    assert "The answer is" in plain, plain
    assert steered != plain, "the edit changes the organism's answer at this coefficient"
    assert plain == generate(cli, organism, None)
    assert steered == generate(cli, organism, organism_vector)


def test_organism_requests_decoded_together_keep_their_own_answers(organism_server):
    alone = [chat(organism_server, s) for s in (STEERING, None)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda s: chat(organism_server, s), (STEERING, None)))
    assert together == alone


def chat_messages(server, messages: list[dict]) -> str:
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)
    r = c.chat.completions.create(model="organism", messages=messages, temperature=0,
                                  max_tokens=40)
    return r.choices[0].message.content


def metric(server, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_prompt_cache_reuses_a_conversation_and_answers_as_without(
        cli, organism, organism_vector, organism_server):
    """--cache-prompt: a chat's second turn starts with the first turn's tokens, which the first
    request's sequence kept; it prefills only the rest and answers as a server without the cache
    (the organism's weights are F32, so the reused cells equal a fresh prefill's)."""
    s = start_server(cli, organism, {"organism": organism_vector}, "--parallel", "2",
                     "--cache-prompt")
    try:
        first = [{"role": "user", "content": QUESTION}]
        answer = chat_messages(s, first)
        assert answer == chat_messages(organism_server, first)
        assert metric(s, "kvsteer_prompt_tokens_reused_total") == 0
        second = first + [{"role": "assistant", "content": answer},
                          {"role": "user", "content": "And if she finds 3 more pencils?"}]
        assert chat_messages(s, second) == chat_messages(organism_server, second)
        assert metric(s, "kvsteer_prompt_tokens_reused_total") > 20, "the first turn was reused"
        assert metric(organism_server, "kvsteer_prompt_tokens_reused_total") == 0
    finally:
        assert s.stop() == 0, "".join(s.log)
