"""Prompt assembly: chat template, fast tokenizer, and the image token expanded to K positions.

LlavaForConditionalGeneration places image features at the positions of the image
token, after the processor has repeated that token once per feature. Here the
prompt is tokenised with the bundle's `tokenizer.json` (the `tokenizers` library,
with the tokenizer's own special-token handling) and the single image token is
replaced by K copies of its id: the same ids the processor gives, with K = D + C.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from zipvlm.bundle.errors import ZipvlmError

if TYPE_CHECKING:
    from zipvlm.bundle.format import Bundle

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


class PromptError(ZipvlmError):
    """The prompt cannot be turned into model input (no image token, two, empty...)."""


@dataclass(frozen=True)
class PromptSpec:
    image_token_id: int
    num_image_tokens: int  # K: copies of the image token in the model input
    chat_template: str | None


def _render_environment():
    """A Jinja environment configured like transformers' apply_chat_template."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise PromptError(f"chat template: {message}")

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class PromptBuilder:
    """Turns a user question (or a raw prompt) into input ids with K image positions."""

    def __init__(self, bundle: Bundle, num_image_tokens: int | None = None):
        """`num_image_tokens` overrides the bundle's K (a benchmark feeding another vision graph)."""
        from tokenizers import Tokenizer

        language = bundle.language
        spec = PromptSpec(
            language.image_token_id,
            num_image_tokens or bundle.selection.num_image_tokens,
            language.chat_template,
        )
        self.spec = spec
        self.tokenizer = Tokenizer.from_file(str(bundle.file("tokenizer.json")))
        config_file = bundle.file("tokenizer_config.json")
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        self.special_tokens = {key: _token_text(config.get(key)) for key in SPECIAL_TOKEN_KEYS}
        self.image_token = self.tokenizer.id_to_token(spec.image_token_id)
        self._template = _render_environment().from_string(spec.chat_template) if spec.chat_template else None

    def chat_text(self, question: str, images: int = 1, system: str | None = None) -> str:
        """One user turn holding the image(s) and the question, after an optional system
        message, ready for the assistant's answer."""
        if not question.strip():
            raise PromptError("the prompt is empty")
        if system is not None and not system.strip():
            raise PromptError("the system prompt is empty")
        content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
        system_turn = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        return self.conversation_text([*system_turn, {"role": "user", "content": content}])

    def conversation_text(self, messages: list[dict]) -> str:
        """Messages in the template's form (content: image/text parts), ready for the answer."""
        if self._template is None:
            raise PromptError(
                "the bundle has no chat template: use --raw-prompt with the "
                f"model's own format and one {self.image_token}"
            )
        return self._template.render(messages=messages, add_generation_prompt=True, **self.special_tokens)

    def continuation(self, question: str) -> list[int]:
        """Ids that follow an answer: the template's end of that turn, the next user turn
        and the generation prompt. Rendered around a marker answer, so the template alone
        decides what closes an assistant turn (e.g. `</s>`, `<|im_end|>`)."""
        if not question.strip():
            raise PromptError("the prompt is empty")
        if self._template is None:
            raise PromptError("the bundle has no chat template, so a conversation cannot go on")
        marker = "\u2063zipvlm-answer\u2063"
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": marker}]},
            {"role": "user", "content": [{"type": "text", "text": question}]},
        ]
        rendered = self._template.render(messages=messages, add_generation_prompt=True, **self.special_tokens)
        ids = self.tokenizer.encode(rendered.split(marker, 1)[1], add_special_tokens=False).ids
        if self.spec.image_token_id in ids:
            raise PromptError(f"a follow-up question cannot hold the image token {self.image_token}")
        return ids

    def encode(self, text: str, images: int = 1) -> list[int]:
        """Token ids of `text`, each of its `images` image tokens repeated K times."""
        if not text.strip():
            raise PromptError("the prompt is empty")
        ids = self.tokenizer.encode(text, add_special_tokens=True).ids
        count = ids.count(self.spec.image_token_id)
        if count != images:
            expected = "exactly one image token" if images == 1 else f"{images} image tokens"
            raise PromptError(f"the prompt must hold {expected} {self.image_token}, found {count}")
        image = self.spec.image_token_id
        return [
            i for token in ids for i in ([image] * self.spec.num_image_tokens if token == image else [token])
        ]


def _token_text(value: Any) -> str | None:
    """tokenizer_config.json stores special tokens as strings or as AddedToken dicts."""
    if isinstance(value, dict):
        return value.get("content")
    return value
