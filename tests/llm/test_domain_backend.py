"""Domain-neutral prompts (issue 19) and the one backend API: in process vs a real `modalrec llm-serve`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from modalrec.core.errors import ConfigError
from modalrec.data.demo import make_demo
from modalrec.llm.backend import BackendError, HTTPBackend, LocalBackend
from modalrec.llm.check import ExplanationChecker, best_fact
from modalrec.llm.config import LLMConfig, read_llm_config
from modalrec.llm.domain import ItemDomain, domain_of
from modalrec.llm.explain import explain, explanation_prompt, foreign_nouns
from modalrec.llm.rerank import LLMReranker
from modalrec.llm.server import token_logprobs
from modalrec.llm.text import ItemText


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo catalogue (clocks, chairs, ...): no column says what its items are."""
    return make_demo(tmp_path_factory.mktemp("demo"), n_items=40, n_users=12, seed=3, n_broken=0)


def test_domain_comes_from_the_data(demo, movies) -> None:
    d = domain_of(demo)
    assert (d.noun, d.fields) == ("item", ())
    assert domain_of(movies).fields == ("genres",)  # the catalogue's genre column describes items
    named = domain_of(demo, noun="product", fields=["description"])
    assert (named.noun, named.plural, named.fields, named.attribute) == (
        "product",
        "products",
        ("description",),
        "description",
    )
    with pytest.raises(ConfigError, match="'colour' is not a catalogue column"):
        domain_of(demo, fields=["colour"])


def test_no_prompt_names_a_domain_the_demo_does_not(llm, demo) -> None:
    rr = LLMReranker(demo, llm, max_history=3)
    prompts = [rr.prompt_text([0, 1, 2]), rr.prompt_text([]), rr.candidate_text(3)]
    texts = ItemText(demo)
    prompts.append(explanation_prompt(texts.titles[0], [], {"image": 1.0}, [], texts.domain))
    for p in prompts:
        assert "movie" not in p.lower() and not foreign_nouns(p, texts.domain), p
    assert "A list of items that a user liked" in prompts[0]
    chat = LLMReranker(demo, llm, prompt="chat", noun="clock")
    assert "clocks" in chat.prompt_text([0, 1]) and "movie" not in chat.prompt_text([0, 1])


def test_demo_explanation_passes_the_checker(llm, demo) -> None:
    """The real LLM phrases an explanation for a demo user; the checker reads it (no 'movie')."""
    u = 0
    checker = ExplanationChecker(demo)
    hist = checker.history(u)
    # an item that shares something checkable with the user's history (the checker's own facts)
    item = next(i for i in range(demo.n_items) if i not in hist and best_fact(checker, i, hist) is not None)
    exp = explain(demo, None, u, item, llm=llm, checker=checker)
    assert "movie" not in exp.text.lower()
    assert exp.check == checker.check(exp.text, u, item).as_dict()
    assert exp.check["passes"], (exp.text, exp.check)


def test_checker_catches_what_it_should(movies) -> None:
    checker = ExplanationChecker(movies)
    item = int(movies.test[0].indices[0])  # a family film, like the user's history
    exp = explain(movies, None, 0, item, use_llm=False)
    assert exp.check is not None and exp.check["passes"], exp.text
    unrelated = explain(movies, None, 0, 1, use_llm=False)  # an action film: nothing shared to state
    assert unrelated.check is not None and not unrelated.check["states_shared_attribute"]
    v = checker.check("Fans of Heat (1995) and the film GoldenEye will like it.", 0, 10, [0])
    assert v.names_outside_history == ["GoldenEye (1995)", "Heat (1995)"] and v.foreign_nouns == ["film"]
    assert not v.states_shared_attribute and not v.passes and not v.uses_noun
    # a genre both items really have, stated about a history item: passes; a genre they do not share: not
    hist = checker.history(0)
    assert 0 in hist  # user 0 is a family-film user who saw Toy Story (index 0)
    ok = checker.check("Like Toy Story, this item is Animation.", 0, 10)
    assert ok.passes and ok.named_history == [0], ok.failures()
    bad = checker.check("Like Toy Story, this item is Thriller.", 0, 10)
    assert not bad.passes and bad.failures() == ["no verified shared attribute"]


def test_llm_config_file(tmp_path) -> None:
    (tmp_path / "llm.toml").write_text(
        '[llm]\nbackend = "http"\nurl = "http://127.0.0.1:1/v1"\nitem_noun = "gadget"\n'
    )
    cfg = read_llm_config(run_dir=tmp_path)
    assert isinstance(cfg.backend_instance(), HTTPBackend) and cfg.item_noun == "gadget"
    (tmp_path / "bad.toml").write_text('[llm]\nbackend = "local"\nmodle = "x"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: \[llm\] modle: Extra inputs"):
        read_llm_config(tmp_path / "bad.toml")
    assert read_llm_config(run_dir=tmp_path / "none").backend == LLMConfig.model_validate({}).backend


def test_unreachable_server_is_a_clear_error() -> None:
    b = HTTPBackend(f"http://127.0.0.1:{_free_port()}/v1", timeout=2)
    with pytest.raises(BackendError, match="unreachable"):
        b.score("A list:", [" x\n"])


def test_server_token_logprobs_match_one_pass_per_sequence(llm32) -> None:
    """Shared-prefix scoring (prefix once, tails batched) = a full pass per sequence."""
    from modalrec.llm.server import _full_logprobs

    seqs = [
        llm32.encode(f"A list of items:\n- Toy Story\n-{t}")
        for t in (" Heat", " Babe and more", " GoldenEye (1995)")
    ]
    fast = token_logprobs(llm32, seqs)
    for s, f in zip(seqs, fast, strict=True):
        ref = _full_logprobs(llm32, s)
        assert f[0] is None and ref[0] is None
        np.testing.assert_allclose(np.array(f[1:], float), np.array(ref[1:], float), atol=1e-4)


def test_server_token_logprobs_of_many_tails_match_too(llm32) -> None:
    """More tails than one pass takes (64): the prefix's cache serves several packed passes."""
    from modalrec.llm.server import _full_logprobs

    seqs = [llm32.encode(f"Items:\n- Toy Story\n- item {k}") for k in range(70)]
    fast = token_logprobs(llm32, seqs)
    for s in (seqs[0], seqs[63], seqs[69]):
        ref = _full_logprobs(llm32, s)
        got = fast[seqs.index(s)]
        np.testing.assert_allclose(np.array(got[1:], float), np.array(ref[1:], float), atol=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(llm32):
    """A real `modalrec llm-serve` process (packaged SmolLM2, float32, 1 thread) on a free port."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-c", "from modalrec.cli import main; main()", "llm-serve", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--dtype", "float32", "--threads", "1"], env=dict(os.environ))
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "llm-serve exited"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # still generating for a timed-out request
            proc.kill()
            proc.wait(timeout=30)


def test_http_backend_scores_equal_in_process(llm32, movies, server) -> None:
    local = LLMReranker(movies, LocalBackend(llm32), max_history=4)
    remote = LLMReranker(movies, HTTPBackend(server, timeout=900), max_history=4)
    for hist, cands in (([0, 2, 4], [6, 8, 10, 1, 3]), ([1, 3], [5, 7, 9, 11, 0])):
        a, b = local.score(hist, cands), remote.score(hist, cands)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-4, rtol=0)
    text = remote.backend.generate("Say hello in one word.", max_new_tokens=5)
    assert text == LocalBackend(llm32).generate("Say hello in one word.", max_new_tokens=5)


def test_rerank_and_explain_run_over_http(movies, server) -> None:
    backend = HTTPBackend(server, timeout=900)  # a busy CI box generates slowly
    exp = explain(movies, None, 0, 6, llm=backend, domain=ItemDomain("movie", ("genres",)))
    assert exp.grounded and exp.source in ("llm", "llm-stripped", "template")
    with pytest.raises(ConfigError, match="in-process"):
        LLMReranker(movies, HTTPBackend(server), prompt="chat")
