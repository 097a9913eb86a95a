"""Write tests/fixtures/greedy_outputs.json: greedy completions of the three real models, for
checking that the generation loop keeps its output when its code moves.

Made with rllm as it was before the token loop moved into Rust (the Python loop of
``Model._stream``, ``batch.Scheduler`` and ``tokenizer.Detokenizer``), then checked by
tests/test_generate_loop.py against the Rust loop of every front end. Run from the repository
root with an rllm installed:

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
            texts.append({"text": text, "tokens": t.completion_tokens, "finish": t.finish_reason})
        out["models"][name] = texts  # type: ignore[index]
    path = Path(__file__).parent / "fixtures" / "greedy_outputs.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
