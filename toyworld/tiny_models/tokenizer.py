"""Tokenizers for the toy world, built offline and deterministically from a fixed in-code corpus.

The real Qwen-VL tokenizers are byte-level BPE models with a fixed pre-tokenizer regex, a block of special tokens
after the BPE vocabulary and a chat template. :func:`build_qwen_tokenizer` trains the same kind of model with the
``tokenizers`` library on an English corpus that covers the toy world's language (shapes, colours, motions,
backgrounds, camera words) and the judge's language (prompt, subject, dynamics, scores, JSON), so that toy prompts
and chains of thought tokenise into few tokens. The reward query token is deliberately absent: descore adds it when
it turns a base backbone into a reward model, exactly as it does with a real Qwen checkpoint.

The text encoders of the tiny diffusers pipelines get tokenizers of the classes their pipelines declare, over the
same corpus: T5 (Unigram over counted pieces), CLIP (byte-level BPE with ``</w>`` word ends) and Llama (metaspace
BPE with byte fallback). Every builder is deterministic: two builds, in one process or in two, save byte-identical
files (the Unigram *trainer* is not deterministic, so the T5 vocabulary is counted, not trained).
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import math
import re
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import CLIPTokenizer, LlamaTokenizer, Qwen2Tokenizer, T5Tokenizer

from descore.errors import ConfigError

#: The Qwen2 / Qwen3 pre-tokenizer split pattern (contractions, letters, single digits, punctuation, spaces).
QWEN_PRETOKENIZE_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

#: Special tokens in the order (and so the relative ids) of the real Qwen3-VL vocabulary. The boolean says whether
#: the token is "special" (skipped by ``decode(skip_special_tokens=True)``): as in Qwen3, the tool and think tags are
#: added tokens that stay in decoded text.
QWEN_VL_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

#: The CLIP pre-tokenizer pattern (special tokens, contractions, letter runs, single digits, punctuation runs).
CLIP_PRETOKENIZE_REGEX = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)

#: Target size of the trained byte-level BPE vocabulary (before the added tokens).
BPE_VOCAB_SIZE = 1536
#: Target size of the text-encoder tokenizers' trained vocabularies (diffusers pipelines).
SMALL_VOCAB_SIZE = 1024

MODEL_MAX_LENGTH = 32768

# The Qwen3-VL (Instruct) template: no default system prompt; a video item renders as
# <|vision_start|><|video_pad|><|vision_end|>, which the processor expands into the model's video tokens.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{%- macro render(content, count_vision) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}"
    "{%- if count_vision -%}{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}Picture {{ image_count.value }}: {% endif -%}{%- endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif item.type == 'video' or 'video' in item -%}"
    "{%- if count_vision -%}{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}Video {{ video_count.value }}: {% endif -%}{%- endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in item -%}{{ item.text }}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message.role + '\\n' }}"
    "{{ render(message.content, message.role == 'user') }}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# The Qwen2-VL / Qwen2.5-VL template: identical rendering, plus the default system prompt those models were trained
# with when the conversation does not start with a system message.
QWEN2_VL_CHAT_TEMPLATE = (
    "{%- if messages and messages[0].role != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}" + QWEN3_VL_CHAT_TEMPLATE
)

CHAT_TEMPLATES: dict[str, str] = {
    "qwen3_vl": QWEN3_VL_CHAT_TEMPLATE,
    "qwen3_vl_moe": QWEN3_VL_CHAT_TEMPLATE,
    "qwen2_5_vl": QWEN2_VL_CHAT_TEMPLATE,
    "qwen2_vl": QWEN2_VL_CHAT_TEMPLATE,
}

# ----------------------------------------------------------------------------------------------------------------
# The training corpus: the toy world's words and the judge's words, combined by fixed rules (no randomness).
# ----------------------------------------------------------------------------------------------------------------
COLOURS = (
    "red",
    "green",
    "blue",
    "yellow",
    "cyan",
    "magenta",
    "orange",
    "purple",
    "white",
    "black",
    "gray",
    "pink",
)
SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "diamond",
    "cross",
    "ellipse",
    "rectangle",
    "hexagon",
    "heart",
    "disc",
    "ball",
    "box",
    "blob",
    "shape",
    "object",
)
MOTIONS = (
    "moves left",
    "moves right",
    "moves up",
    "moves down",
    "stays still",
    "moves diagonally",
    "bounces",
    "rotates clockwise",
    "rotates counterclockwise",
    "grows",
    "shrinks",
    "slides across the frame",
    "drifts slowly",
    "jumps",
    "falls",
    "spins",
    "shakes",
    "zigzags",
    "circles around",
    "oscillates",
)
BACKGROUNDS = (
    "plain",
    "dark",
    "light",
    "gray",
    "black",
    "white",
    "blue",
    "green",
    "gradient",
    "noisy",
    "checkered",
    "striped",
    "grid",
    "textured",
    "sky",
    "grass",
    "sand",
    "water",
    "night",
    "sunset",
)
CAMERA = (
    "the camera is static",
    "the camera pans left",
    "the camera pans right",
    "the camera tilts up",
    "the camera tilts down",
    "the camera zooms in",
    "the camera zooms out",
    "the camera shakes",
    "the camera tracks the object",
    "a handheld camera follows the subject",
    "a fixed camera with no movement",
    "a slow dolly shot",
    "an aerial view",
    "a close-up shot",
    "a wide shot",
)
SPEEDS = ("slowly", "quickly", "smoothly", "steadily", "suddenly", "gradually", "fast", "at a constant speed")
SIZES = ("small", "large", "tiny", "big", "medium", "huge")
STYLES = (
    "a realistic style",
    "a cartoon style",
    "a flat style",
    "an animated look",
    "a minimal style",
    "a cinematic look",
    "a pixel art style",
    "a watercolor style",
    "a sketch style",
    "a photographic style",
)
DEFECTS = (
    "flicker",
    "noise",
    "blur",
    "fragments",
    "an extra object",
    "the object splits",
    "the object jitters",
    "the colour changes",
    "the shape deforms",
    "the object disappears",
    "ghosting",
    "tearing",
    "artifacts",
    "the background flickers",
    "the object teleports",
    "the motion is reversed",
    "the object is cut off",
)
DIMENSION_WORDS = ("subject", "dynamics", "camera", "environment", "style")
JUDGE_TEXT = (
    "You are a video-text alignment judge. Watch the video and read the prompt. "
    "First, decode the prompt into explicit and implicit visual expectations. "
    "Second, describe what the video actually shows: the subject, its actions, the environment, the camera, "
    "the style and any artifacts. "
    "Third, rate five dimensions: subject and dynamics are primary; camera, environment and style are secondary. "
    "Each dimension is scored 2 for perfect, 1 for minor flaws, 0 for failure, or N/A when not applicable. "
    "Finally give an overall score from 1.00 to 5.00 by the interval rule: 5 when all primary dimensions are 2 and "
    "every secondary dimension is 2 or N/A; 4.x when the flaws are only in secondary dimensions; 3.x when one "
    "primary dimension is 1; 2.x when one primary dimension is 0; 1.x when both primary dimensions are 0. "
    "Write the answer as a JSON object inside <answer> tags with the keys dimensional_scores and overall_score. "
    "Think step by step before you answer. Describe the video first, then compare it with the prompt. "
    "The reward is the score of the video. A higher score means a better video. Which video is better, A or B? "
    "Video A is better than video B. Video B is better than video A. Both videos are equally good. It is a tie. "
    "The text prompt describes a scene. The generated video should match the prompt. "
    "The quality, consistency, smoothness, temporal coherence, motion, physics and aesthetics of the video. "
    "The frames are consistent over time. The motion is smooth and natural. The object keeps its shape and colour. "
)
GENERAL_TEXT = (
    "The shape is correct but the motion is wrong. The colour matches while the direction does not. "
    "However, the object is not where it should be, because it moves the other way. There is no camera motion, "
    "so the camera dimension is not applicable. This is a good video with only a small flaw. This is a bad video "
    "with a clear failure. The result is acceptable. It looks almost right, yet some details are missing. "
    "In the first frame, in the middle of the clip, and in the last frame, the object is visible. At the start "
    "and at the end, it is near the top, the bottom, the left edge, the right edge or the center of the image. "
    "Overall, I would rate it as high, low or medium. The generated sample is blurry, sharp, bright, dim, clean, "
    "noisy, stable or unstable. Yes. No. Maybe. True. False. None. Please answer with one word. "
    "Here is my reasoning. Let me check each dimension. I think the video is correct. I am not sure. "
)


def _toy_sentences() -> list[str]:
    """Deterministic sentences that pair every colour, shape, motion and background at least once."""
    lines = []
    for i, (colour, shape) in enumerate(itertools.product(COLOURS, SHAPES)):
        motion = MOTIONS[i % len(MOTIONS)]
        background = BACKGROUNDS[(3 * i) % len(BACKGROUNDS)]
        size = SIZES[i % len(SIZES)]
        speed = SPEEDS[(5 * i) % len(SPEEDS)]
        camera = CAMERA[(7 * i) % len(CAMERA)]
        style = STYLES[(11 * i) % len(STYLES)]
        defect = DEFECTS[(13 * i) % len(DEFECTS)]
        lines.append(f"A {size} {colour} {shape} {motion} {speed} on a {background} background, {camera}.")
        lines.append(f"The {colour} {shape} {motion}. The background is {background}. Rendered in {style}.")
        lines.append(
            f"The prompt asks for a {colour} {shape} that {motion}. The video shows a {colour} {shape} that "
            f"{MOTIONS[(i + 1) % len(MOTIONS)]}, and {defect}."
        )
    return lines


def _judge_sentences() -> list[str]:
    """The judge prompt, chains of thought and answer blocks, with every sub-score pattern and many scores."""
    lines = [JUDGE_TEXT] * 4 + [GENERAL_TEXT] * 4
    for i, name in enumerate(DIMENSION_WORDS):
        for score, verdict in ((2, "perfect"), (1, "minor flaws"), (0, "a failure")):
            lines.append(f"{name.capitalize()}: {score}. The {name} is {verdict}.")
        lines.append(f"{name.capitalize()}: N/A. The prompt does not mention the {name}.")
    for i, scores in enumerate(
        itertools.product((2, 1, 0), (2, 1, 0), (2, 1, 0, "N/A"), (2, 1, "N/A"), (2, 1))
    ):
        values = ", ".join(
            f'"{d}": ' + (f'"{v}"' if v == "N/A" else str(v)) for d, v in zip(DIMENSION_WORDS, scores)
        )
        overall = f"{1 + i % 5}.{(7 * i) % 100:02d}"
        lines.append(f'<answer>{{"dimensional_scores": {{{values}}}, "overall_score": {overall}}}</answer>')
    # Qwen3-VL's processor writes a timestamp before each temporal patch of a video: "<1.5 seconds>".
    lines.append("".join(f"<{step / 4:.1f} seconds>" for step in range(120)))
    for number in range(0, 1000, 7):
        lines.append(f"Frame {number}, step {number // 3}, seed {number % 97}, score {number / 100:.2f}.")
    return lines


def training_corpus() -> list[str]:
    """The fixed corpus the tokenizer is trained on (also useful to test that text tokenises compactly)."""
    return _toy_sentences() + _judge_sentences()


_Vocab = tuple[tuple[str, int], ...]
_Merges = tuple[tuple[str, str], ...]

# The byte-to-unicode alphabet of byte-level BPE: every byte is a symbol, so no text is ever unknown.
_BYTE_ALPHABET = sorted(pre_tokenizers.ByteLevel.alphabet())


def _qwen_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _clip_normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )


def _clip_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_PRETOKENIZE_REGEX), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )


@functools.cache
def _trained_bpe(style: str) -> tuple[_Vocab, _Merges]:
    """Train a BPE model with the ``tokenizers`` trainer, once per process.

    ``qwen``: byte-level with the Qwen regex; ``llama``: SentencePiece-like metaspace pieces (bytes are covered by
    the byte-fallback tokens instead). Returns (vocab items sorted by id, merges) as immutable tuples.
    """
    tokenizer = Tokenizer(BPE())
    if style == "qwen":
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = _qwen_pre_tokenizer()
        extra: dict[str, Any] = {"initial_alphabet": _BYTE_ALPHABET}
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        extra = {}
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE if style == "qwen" else SMALL_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        **extra,
    )
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = tuple(sorted(model["vocab"].items(), key=lambda item: item[1]))
    merges = tuple(
        tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in model["merges"]
    )
    return vocab, merges


def _merge_symbols(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, index = [], 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            merged.append(pair[0] + pair[1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return tuple(merged)


@functools.cache
def _clip_merges() -> _Merges:
    """CLIP-style BPE merges (lower-cased byte-level words, last symbol carrying ``</w>``), trained in Python.

    The ``tokenizers`` trainer adds the ``</w>`` symbols in hash-map order, which differs between processes; this
    small trainer breaks count ties by the pair itself, so the result is the same everywhere.
    """
    normalizer = _clip_normalizer()
    pre_tokenizer = _clip_pre_tokenizer()
    words: collections.Counter[tuple[str, ...]] = collections.Counter()
    for line in training_corpus():
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)):
            words[(*word[:-1], word[-1] + "</w>")] += 1
    merges: list[tuple[str, str]] = []
    budget = SMALL_VOCAB_SIZE - 2 * len(_BYTE_ALPHABET)
    while len(merges) < budget:
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for symbols, count in words.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        if pairs[best] < 2:
            break
        merges.append(best)
        words = collections.Counter(
            {(_merge_symbols(s, best) if best[0] in s else s): count for s, count in words.items()}
        )
    return tuple(merges)


def build_qwen_tokenizer(family: str = "qwen3_vl") -> Qwen2Tokenizer:
    """A deterministic Qwen-VL-style tokenizer: trained byte-level BPE + the Qwen-VL special tokens + chat template.

    ``family`` only chooses the chat template (Qwen2-VL and Qwen2.5-VL add a default system prompt; Qwen3-VL does
    not); the vocabulary is the same for every family. ``len(tokenizer)`` is the vocabulary size a model needs.
    """
    if family not in CHAT_TEMPLATES:
        raise ConfigError(
            f"family: unknown Qwen-VL family {family!r}; expected one of {sorted(CHAT_TEMPLATES)}"
        )
    vocab_items, merges = _trained_bpe("qwen")
    vocab = dict(vocab_items)
    base = len(vocab)
    # Reserve the added tokens' ids in the given order, so ids do not depend on how the constructor adds eos/pad.
    for offset, (token, _) in enumerate(QWEN_VL_ADDED_TOKENS):
        vocab[token] = base + offset
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=MODEL_MAX_LENGTH,
    )
    tokenizer.add_tokens(
        [AddedToken(token, special=special, normalized=False) for token, special in QWEN_VL_ADDED_TOKENS]
    )
    extra = [token for token, special in QWEN_VL_ADDED_TOKENS if special and token != "<|endoftext|>"]
    tokenizer.add_special_tokens({"extra_special_tokens": extra})
    tokenizer.chat_template = CHAT_TEMPLATES[family]
    return tokenizer


# ----------------------------------------------------------------------------------------------------------------
# Text-encoder tokenizers for the tiny diffusers pipelines, of the classes the pipelines declare.
# ----------------------------------------------------------------------------------------------------------------
#: The chat-header tokens of the Llama-3 text encoder that HunyuanVideo's prompt template is written in.
LLAMA3_HEADER_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

_T5_PIECE_RE = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]+")


@functools.lru_cache(maxsize=1)
def _t5_pieces() -> tuple[tuple[str, float], ...]:
    """Unigram pieces with log-frequency scores counted on the corpus, plus low-scored single-character fallbacks."""
    counts: collections.Counter[str] = collections.Counter()
    for line in training_corpus():
        for chunk in line.split():
            parts = _T5_PIECE_RE.findall(chunk)
            counts.update(["\u2581" + parts[0], *parts[1:]])
    total = sum(counts.values())
    pieces = [
        (piece, math.log(count / total))
        for piece, count in sorted(counts.items(), key=lambda i: (-i[1], i[0]))
    ]
    known = set(counts)
    floor = math.log(0.5 / total) - 10.0  # any real piece beats a spelling out of characters
    for char in ["\u2581"] + [chr(code) for code in range(33, 127)]:
        for piece in (char, "\u2581" + char) if char != "\u2581" else (char,):
            if piece not in known:
                pieces.append((piece, floor))
                known.add(piece)
    return tuple(pieces)


def build_t5_tokenizer(model_max_length: int = 512) -> T5Tokenizer:
    """A T5 tokenizer (SentencePiece-style Unigram) over a fixed vocabulary of toy-world words.

    Used with the T5 / UMT5 text encoders of the Wan, CogVideoX and LTX pipelines. Special ids follow T5:
    ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2; characters outside printable ASCII map to ``<unk>``, as characters
    outside a real T5 vocabulary do.
    """
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *_t5_pieces()]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def build_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer (lower-cased byte-level BPE with ``</w>`` word ends) trained on the toy corpus.

    As in CLIP, every byte exists both inside a word and at a word end, so no text is unknown, and
    ``<|startoftext|>`` / ``<|endoftext|>`` come last. The sequence length limit is CLIP's 77.
    """
    merges = _clip_merges()
    vocab: dict[str, int] = {}
    for token in [*_BYTE_ALPHABET, *(char + "</w>" for char in _BYTE_ALPHABET), *(a + b for a, b in merges)]:
        vocab.setdefault(token, len(vocab))
    for token in ("<|startoftext|>", "<|endoftext|>"):
        vocab[token] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=77)


def build_llama_tokenizer(model_max_length: int = 4096) -> LlamaTokenizer:
    """A Llama tokenizer (metaspace BPE with byte fallback) trained on the toy corpus, for HunyuanVideo.

    Layout as in Llama: ``<unk>``, ``<s>``, ``</s>``, the 256 byte-fallback tokens, then the trained pieces; a
    ``<pad>`` token is appended because the pipeline pads prompts to a fixed length, and so are the Llama-3 header
    tokens that HunyuanVideo's prompt template uses. Padding is on the right, as HunyuanVideo's text encoder expects
    (it crops the prompt template from the left).
    """
    trained, merges = _trained_bpe("llama")
    vocab: dict[str, int] = {}
    for token in [
        "<unk>",
        "<s>",
        "</s>",
        *(f"<0x{byte:02X}>" for byte in range(256)),
        *(t for t, _ in trained),
    ]:
        vocab.setdefault(token, len(vocab))
    for token in ("<pad>", *LLAMA3_HEADER_TOKENS):
        vocab[token] = len(vocab)
    tokenizer = LlamaTokenizer(
        vocab=vocab,
        merges=list(merges),
        pad_token="<pad>",
        add_bos_token=True,
        padding_side="right",
        model_max_length=model_max_length,
    )
    tokenizer.add_special_tokens({"extra_special_tokens": list(LLAMA3_HEADER_TOKENS)})
    return tokenizer
