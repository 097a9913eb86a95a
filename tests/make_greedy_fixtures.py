"""Write tests/fixtures/greedy_outputs.json: greedy completions of the three real models, for
checking that the generation loop and the kernels keep their output when their code moves.

Each completion keeps its token ids and, per step, the gap between the log-probabilities of
the chosen token and the runner-up: a kernel that sums in another order (another ISA tier)
may flip a greedy choice only where that gap is small (tests/test_generate_loop.py).

The texts were first made with the Python token loop (before it moved into Rust) and
matched by the Rust loop; ids and gaps were added with the AVX2 kernels. Run from the
repository root with an rllm installed:

    python tests/make_greedy_fixtures.py
"""

from __future__ import annotations

import json
from pathlib import Path

import rllm

MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"]
PROMPTS = [
    "The capital of France is",
    "用中文介绍一下北京。",
    "Write a haiku about the sea 🌊:",
    "def fibonacci(n):",
    "Émile Zola était",
]
CHATS = ["Name three primary colors, comma separated.", "Say hello in Japanese."]
MAX_TOKENS = 40


def main() -> None:
    out: dict[str, object] = {
        "max_tokens": MAX_TOKENS,
        "prompts": PROMPTS,
        "chats": CHATS,
        "models": {},
    }
    for name in MODELS:
        model = rllm.Model(name, n_ctx=256, n_threads=2)
        texts = []
        chats = [model.chat_prompt([{"role": "user", "content": c}]) for c in CHATS]
        for prompt in PROMPTS + chats:
            text = model.generate(prompt, max_tokens=MAX_TOKENS, temperature=0)
            t = model.timings
            ctx = model.context(n_ctx=256)
            ctx.eval(prompt if isinstance(prompt, list) else model.tokenize(prompt, special=True))
            sampler = rllm.Sampler(temperature=0)
            chunks = list(ctx.generate(sampler, max_tokens=MAX_TOKENS, logprobs=2))
            assert "".join(c.text for c in chunks) == text
            steps = [lp for c in chunks for lp in c.logprobs]
            ids = [lp.token for lp in steps]
            gaps = [round(lp.top[0][1] - lp.top[1][1], 4) for lp in steps]
            texts.append(
                {
                    "text": text,
                    "tokens": t.completion_tokens,
                    "finish": t.finish_reason,
                    "ids": ids,
                    "gaps": gaps,
                }
            )
        out["models"][name] = texts  # type: ignore[index]
    path = Path(__file__).parent / "fixtures" / "greedy_outputs.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
