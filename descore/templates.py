"""Judge prompt templates and the neutralisation of control tokens in user-supplied text.

A template turns a generation prompt into the user turn the backbone reads next to the video. User text (the prompt
being judged, a supplied chain of thought) is neutralised first: no string a user writes may become a control token
(the query token, vision placeholders, chat markers), so a prompt can never inject a second query position.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from descore.answer import DIMENSIONS

#: Inserted after the first character of any control-token string found in user text. Invisible when rendered,
#: and it makes the string impossible for the tokenizer to match as a special token.
ESCAPE_CHAR = "\u200b"


@dataclass(frozen=True)
class JudgeTemplate:
    """The instruction placed after the video in the user turn. ``{prompt}`` is replaced by the judged prompt."""

    name: str
    instruction: str
    system: str | None = None

    def render(self, prompt: str) -> str:
        return self.instruction.replace("{prompt}", prompt)


_ALIGNMENT_JUDGE = """You are a video-text alignment judge. The video above was generated from this prompt:
"{prompt}"

Judge how well the video realises the prompt, in three stages.
1. Expectations: decode the prompt into the explicit and implicit visual expectations it sets.
2. Observation: describe what the video actually shows - the subject, its actions and motion, the camera, the
environment, the style - and any artifacts.
3. Analysis: rate each dimension as 2 (perfect), 1 (minor flaws), 0 (failure) or N/A (not set by the prompt).
Primary: subject, dynamics. Secondary: camera, environment, style.
Overall score from 1.00 to 5.00: 5 when every primary dimension is 2 and every secondary one is 2 or N/A; 4.x when
only secondary dimensions have flaws; 3.x when a primary dimension is 1; 2.x when one primary dimension is 0;
1.x when both primary dimensions are 0.
End with <answer>{"dimensional_scores": {DIMENSION_KEYS}, "overall_score": x.xx}</answer>."""

TEMPLATES: dict[str, JudgeTemplate] = {
    "video_text_alignment_judge": JudgeTemplate(
        name="video_text_alignment_judge",
        instruction=_ALIGNMENT_JUDGE.replace(
            "{DIMENSION_KEYS}", "{" + ", ".join(f'"{d}": s' for d in DIMENSIONS) + "}"
        ),
    ),
    "compact_alignment_judge": JudgeTemplate(
        name="compact_alignment_judge",
        instruction=(
            'Judge the video against the prompt "{prompt}": rate subject, dynamics (primary), camera, environment, '
            "style (secondary) as 2, 1, 0 or N/A, then give the <answer> block."
        ),
    ),
}
"""Judge templates by name. ``compact_alignment_judge`` is the same rubric in one sentence, for backbones with a
short context (the toy checkpoint): the full judge is about 360 tokens."""


def get_template(name: str) -> JudgeTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown judge template {name!r}; known: {sorted(TEMPLATES)}") from None


def neutralize_control_tokens(text: str, control_tokens: Iterable[str]) -> str:
    """Escape every occurrence of a control-token string in user text so it tokenises as plain text.

    Longer tokens are handled first so that a token containing another is escaped as a whole.
    """
    for token in sorted({t for t in control_tokens if t}, key=len, reverse=True):
        if token in text:
            text = text.replace(token, token[0] + ESCAPE_CHAR + token[1:])
    return text


def build_messages(template: JudgeTemplate, prompt: str) -> list[dict]:
    """Chat messages for one judged video: (system,) user [video, instruction]. The CoT is the assistant's turn."""
    messages: list[dict] = []
    if template.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": template.system}]})
    messages.append(
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": template.render(prompt)}],
        }
    )
    return messages
