"""What is asked about each class, CuPL's way or CLIP-D's, and how an answer becomes texts.

CuPL (Pratt et al., 2023) asks five questions per class and keeps the sentences of every
answer; CLIP-D (Menon & Vondrick, 2023) asks for a bulleted list of visual features after one
worked example, so that chat models answer in the shape of the original few-shot prompt.
"""

from __future__ import annotations

from pathlib import Path

from wca.descriptions.clean import parse_descriptors, parse_sentences
from wca.descriptions.io import read_json, read_text

STYLES = ("cupl", "clip-d")

# CuPL's five questions. {a} is the article, {c} the class name.
CUPL_QUESTIONS = (
    "Describe what {a} {c} looks like",
    "How can you identify {a} {c}?",
    "What does {a} {c} look like?",
    "Describe an image from the internet of {a} {c}",
    "A caption of an image of {a} {c}:",
)
CUPL_SYSTEM_PROMPT = (
    "You write short, factual descriptions of what things look like. "
    "Answer in one or two plain sentences, with no list and no preamble."
)

# CLIP-D's question, asked after one worked example.
CLIPD_QUESTION = "What are useful features for distinguishing a {c} in a photo?"
CLIPD_SYSTEM_PROMPT = (
    "You list the visual features that tell an object apart in a photo. Answer with one "
    "sentence ending in a colon, then one short noun phrase per line, each starting with '- '."
)
CLIPD_EXAMPLE = (
    (
        "user",
        "What are useful features for distinguishing a zebra in a photo?",
    ),
    (
        "assistant",
        "There are several useful visual features to tell there is a zebra in a photo:\n"
        "- a horse-like animal\n- black and white stripes\n- a short, upright mane\n"
        "- a tufted tail\n- dark hooves",
    ),
)

# Defaults per style: answers per question, temperature, max tokens (CuPL sampled 10 answers
# at temperature 0.99 with 50 tokens; CLIP-D asked once, greedily).
STYLE_DEFAULTS = {
    "cupl": {"n": 10, "temperature": 0.99, "max_tokens": 50},
    "clip-d": {"n": 1, "temperature": 0.0, "max_tokens": 200},
}
STYLE_QUESTIONS = {"cupl": CUPL_QUESTIONS, "clip-d": (CLIPD_QUESTION,)}
STYLE_SYSTEM_PROMPTS = {"cupl": CUPL_SYSTEM_PROMPT, "clip-d": CLIPD_SYSTEM_PROMPT}


def article(classname: str) -> str:
    """The indefinite article CuPL uses: "an" before a vowel letter, "a" otherwise."""
    return "an" if classname.strip()[:1].lower() in "aeiou" else "a"


def fill_template(template: str, classname: str) -> str:
    """Put the class name (``{c}`` or ``{}``) and its article (``{a}``) into a question."""
    return (
        template.replace("{a}", article(classname))
        .replace("{c}", classname)
        .replace("{}", classname)
    )


def load_questions(path: str | Path) -> list[str]:
    """Question templates from a JSON list of strings or a text file with one per line."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        questions = read_json(path)
        if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
            raise ValueError(f"{path}: expected a JSON list of question templates (strings)")
    else:
        questions = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    return questions


def chat_messages(
    style: str, system_prompt: str | None, classname: str, question: str
) -> list[dict[str, str]]:
    """The chat messages that ask ``question`` about ``classname`` in ``style``."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if style == "clip-d":
        messages += [{"role": role, "content": text} for role, text in CLIPD_EXAMPLE]
    messages.append({"role": "user", "content": fill_template(question, classname)})
    return messages


def parse_answer(style: str, answer: str, truncated: bool) -> list[str]:
    """Descriptions from one answer, in the style's shape (sentences or descriptor phrases)."""
    if style == "cupl":
        return parse_sentences(answer, truncated)
    return parse_descriptors(answer, truncated)
