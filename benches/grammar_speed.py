"""Decode speed with a nested JSON schema against without, alternating A/B rounds.

    python benches/grammar_speed.py MODEL.gguf [--rounds 4] [--tokens 96]

Each round generates from the same chat prompt once free and once under the schema (greedy,
same token budget) and compares eval tokens/s; the mask's cost is 1 - constrained/free.
"""

from __future__ import annotations

import argparse
import statistics

import rllm

SCHEMA = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "minItems": 30,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 16},
                    "age": {"type": "integer"},
                    "address": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "maxLength": 16},
                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                        },
                        "required": ["city", "zip"],
                    },
                    "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}},
                },
                "required": ["name", "age", "address", "tags"],
            },
        }
    },
    "required": ["people"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=96)
    args = ap.parse_args()
    m = rllm.Model(args.model, n_ctx=1024)
    msgs = [{"role": "user", "content": "List many people with addresses as JSON."}]
    prompt = m.chat_prompt(msgs)
    grammar = rllm.Grammar.from_json_schema(SCHEMA)
    m.generate(prompt, max_tokens=4, grammar=grammar)  # builds the token table once
    rates: dict[str, list[float]] = {"free": [], "schema": []}
    for r in range(args.rounds):
        order = ["free", "schema"] if r % 2 == 0 else ["schema", "free"]
        for kind in order:
            g = grammar if kind == "schema" else None
            m.generate(prompt, max_tokens=args.tokens, temperature=0, grammar=g)
            t = m.timings
            rates[kind].append(1000 * t.eval_tokens / t.eval_ms)
            print(f"round {r} {kind:6s} {t.eval_tokens:4d} tokens {rates[kind][-1]:7.2f} t/s")
    free = statistics.median(rates["free"])
    schema = statistics.median(rates["schema"])
    cost = 100 * (1 - schema / free)
    print(f"median: free {free:.2f} t/s, schema {schema:.2f} t/s, cost {cost:.1f}%")


if __name__ == "__main__":
    main()
