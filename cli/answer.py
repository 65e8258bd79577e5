"""`zipvlm run` (one question about one image) and `zipvlm chat` (a conversation about it)."""

from __future__ import annotations

import argparse
import json
import sys

from zipvlm.cli.options import add_bundle_and_image, open_pipeline


def register(commands) -> None:
    run = commands.add_parser(
        "run",
        help="answer a question about one image",
        description="Answer a question about one image with a bundle (no PyTorch). The answer "
        "streams to the terminal; --json prints one object with timings instead.",
    )
    add_bundle_and_image(run)
    prompt = run.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the question; the model's chat template is applied")
    prompt.add_argument(
        "--raw-prompt", help="text given verbatim to the tokenizer, holding the image token once"
    )
    run.add_argument(
        "--max-new-tokens",
        type=int,
        default=128,
        metavar="N",
        help="stop after N generated tokens (default 128)",
    )
    run.add_argument(
        "--temperature", type=float, default=0.0, help="0 (default) decodes greedily; above 0 samples"
    )
    run.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1)")
    run.add_argument("--seed", type=int, help="seed for sampling")
    run.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: text, token_ids, num_image_tokens, timings_ms",
    )
    run.set_defaults(handler=run_run)

    chat = commands.add_parser(
        "chat",
        help="a conversation about one image, one question per line of stdin",
        description="Ask questions about one image, one per line of standard input (a terminal "
        "or a pipe); follow-ups reuse the KV cache of the image and earlier turns. "
        "An empty line is skipped; end of input or 'exit' ends the chat.",
    )
    add_bundle_and_image(chat)
    chat.add_argument(
        "--max-new-tokens",
        type=int,
        default=128,
        metavar="N",
        help="stop each answer after N tokens (default 128)",
    )
    chat.set_defaults(handler=run_chat)


def run_run(args: argparse.Namespace) -> int:
    from zipvlm.runtime.generation import GenerationOptions
    from zipvlm.runtime.pipeline import read_image

    options = GenerationOptions(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    options.validate()
    image = read_image(args.image)
    pipeline = open_pipeline(args)
    ids = pipeline.prompt_ids(args.prompt, args.raw_prompt)
    if args.json:
        answer = pipeline.ask(image, ids, options)
        print(
            json.dumps(
                {
                    "text": answer.text,
                    "token_ids": answer.token_ids,
                    "num_image_tokens": answer.num_image_tokens,
                    "timings_ms": answer.timings_ms,
                }
            )
        )
        return 0
    answer = pipeline.ask(image, ids, options, on_text=lambda text: print(text, end="", flush=True))
    print()
    timings = answer.timings
    print(
        f"[{answer.num_image_tokens} image tokens; preprocess {timings.preprocess:.0f} ms, "
        f"vision {timings.vision:.0f} ms, prefill {timings.prefill:.0f} ms, "
        f"first token {timings.first_token:.0f} ms, "
        f"decode {timings.decode_tokens_per_s:.1f} tokens/s]",
        file=sys.stderr,
    )
    return 0


def run_chat(args: argparse.Namespace) -> int:
    from zipvlm.runtime.conversation import Session
    from zipvlm.runtime.generation import GenerationOptions
    from zipvlm.runtime.pipeline import read_image

    options = GenerationOptions(args.max_new_tokens)
    options.validate()
    session = Session(open_pipeline(args), read_image(args.image), options)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "exit":
            return 0
        if not line.strip():
            continue
        answer = session.ask(line.strip(), on_text=lambda text: print(text, end="", flush=True))
        print()
        print(
            f"[prefill {answer.prefill_tokens} tokens in {answer.timings.prefill:.0f} ms, "
            f"{len(answer.token_ids)} tokens at "
            f"{answer.timings.decode_tokens_per_s:.1f}/s]",
            file=sys.stderr,
        )
