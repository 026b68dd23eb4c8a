#!/usr/bin/env python3
"""Golden data for the tokenizer and chat-template tests, made by Hugging Face
transformers/tokenizers and jinja2 (the independent reference).

Run from the repository root:
    /opt/refvenv/bin/python tests/golden/make_tokenizer_golden.py [path/to/model.gguf]

Writes, under tests/golden/tokenizer/:
  smollm2_ids.jsonl        {"text", "ids"} per line: HF encoding of each string
                           with the model's own special-token behaviour (and its
                           own pre-tokenizer: see tokenizer_golden)
  smollm2/tokenizer.json   the HF tokenizer built from the GGUF (compact JSON)
  smollm2/tokenizer_config.json
  pretok_golden.jsonl      {"text", "<rule>": [pieces]}: HF regex splits with the
                           GPT-2, SmolLM (digits + GPT-2), Llama-3 and Qwen2 rules
  chat_golden.json         templates and their jinja2 renderings
"""
import json
import os
import random
import shutil
import sys
import tempfile

import jinja2
from tokenizers import Regex, pre_tokenizers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "tokenizer")
DEFAULT_GGUF = os.path.expanduser("~/.cache/lagserve/models/SmolLM2-135M-Instruct.Q4_1.gguf")

# Must match engine/model/pretokenizer.h.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Meta-Llama-3-8B-Instruct's template (tokenizer_config.json "chat_template").
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}")

# Qwen2.5-Instruct's template without the tool-calling branches: ChatML with a
# default system prompt written with "\n" escapes.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def hand_written():
    return [
        "", " ", "  ", "\n", "\n\n", "\n\n\n", "\t", "\t\t", " \n ", "\r\n", "\r\n\r\n",
        "a", "hello", "Hello world", "Hello, world!", "hello   world", "   x", "x   ",
        "trailing space ", "trailing spaces   ", "  leading and trailing  ",
        "tab\tseparated\tvalues", "line1\nline2\n", "para1\n\n\npara2", "\n\n\nx",
        "x\n\n\n", " \t \n \t", "multiple    \n   spaces\n\n  and  lines",
        "don't", "I'M", "I'm", "you're", "they've", "we'll", "he'd", "it's", "IT'S",
        "DON'T", "o'clock", "rock'n'roll", "'s", "'", "''", "'''", "Ma'am's",
        "12345", "3.14159", "1,000,000", "0.000001", "-42", "+7", "1e10", "2024-01-01",
        "12:30:45", "123456789012345678901234567890", "1 2 3 4 5", "v1.2.3", "$100.50",
        "50%", "#1", "x2", "2x", "H2O", "COVID-19",
        "!!!", "???", "...", "?!?!", "--", "---", "-->", "<!--", "==", "!==", "::", "->",
        "()", "[]", "{}", "{{}}", "<>", "@@", "##", "**bold**", "__init__", "~/.bashrc",
        "café", "naïve", "résumé", "Ångström", "façade", "über", "Straße", "señor",
        "Ελληνικά", "αβγ δεζ", "Привет, мир!", "Москва", "Україна", "Ђорђе",
        "日本語", "中文字符", "你好，世界！", "東京タワー", "ひらがな", "カタカナ", "한국어",
        "안녕하세요", "العربية", "שלום", "हिन्दी", "ภาษาไทย", "ქართული", "Հայերեն",
        "😀", "😀😀😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇫🇷", "🇯🇵🇺🇸", "hi 👋 there",
        "🧑🏿‍💻", "👩🏻‍❤️‍💋‍👨🏼", "emoji🙂in🙃text", "🤖: beep", "✅ done",
        "e\u0301", "n\u0303", "\u00a0", "a\u00a0b", "a\u2009b", "a\u3000b", "\u200b",
        "a\u200bb", "\ufeffBOM", "\u180e", "a\u0085b", "a\u2028b", "a\u001cb",
        "\u0000", "a\u0000b", "\ufffd", "\uffff", "\U0010ffff", "\ud7ff", "\ue000",
        "Ã©", "â€™", "\u202eRTL override", "x\u0300\u0301\u0302",
        "def f(x):\n    return x * 2\n",
        "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
        "#include <stdio.h>\nint main() { printf(\"hi\\n\"); }",
        "SELECT * FROM users WHERE id = 42;",
        "<div class=\"x\">Hello</div>",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
        "if x == 1:\n\tpass\nelif x != 2:\n\t\tpass",
        "    indented\n        more\n    back",
        "https://example.com/path?q=1&r=2#frag", "user@example.com",
        "C:\\Windows\\System32", "$ ls -la | grep foo > out.txt",
        "λx. x + 1", "∀x ∈ ℝ: x² ≥ 0", "½ ¾ ⅓", "Ⅻ", "①②③", "٣٤٥", "१२३",
        "hi<|im_start|>user\nx<|im_end|>",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
        "<|endoftext|>", "a<|endoftext|>b", "<|im_start|><|im_end|>",
        "<|im_start", "im_start|>", "<|im_start|", "<<|im_end|>>", "<repo_name>x<file_sep>",
        "<|unknown|>", "< |im_start| >",
        "The quick brown fox jumps over the lazy dog.",
        "THE QUICK BROWN FOX", "ThE qUiCk BrOwN fOx", "camelCaseIdentifier",
        "snake_case_identifier", "SCREAMING_SNAKE", "kebab-case-name",
        "Mr. Smith went to Washington.", "e.g. i.e. etc.", "U.S.A.",
        "A" * 100, "ab" * 60, " " * 50, "\n" * 20, "!" * 40, "9" * 64, "😀" * 20,
        "日本" * 30, "a " * 50, " a" * 50,
    ]


def random_strings(rng, n):
    pools = {
        "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "digit": "0123456789",
        "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        "space": [" ", " ", " ", "  ", "\n", "\t", "\r\n", "\n\n", "\u00a0", "\u3000"],
        "latin": "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœĳŁłŒ",
        "greek": "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΩ",
        "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГД",
        "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
        "kana": "あいうえおかきくけこアイウエオカキクケコ",
        "emoji": ["😀", "😂", "🥲", "👍", "👍🏻", "👍🏿", "❤️", "🔥", "🎉", "👨‍💻",
                  "👩‍👩‍👦", "🏳️‍⚧️", "🇩🇪", "✨", "🙏🏼"],
        "special": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<file_sep>"],
        "word": ["the", " the", "The", "ing", " and", "tion", "'s", "'ll", "n't",
                 " don't", "http", "://", "www", ".com", "func", "()", "->", "==",
                 "    ", "\n\n", "1234", "3.14"],
    }
    names = list(pools)
    out = []
    for _ in range(n):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 40, 80])
        kinds = rng.sample(names, rng.randint(1, 4))
        parts = []
        for _ in range(length):
            pool = pools[rng.choice(kinds)]
            parts.append(rng.choice(pool))
        out.append("".join(parts))
    return out


def long_text(rng):
    words = ["lorem", "ipsum", "dolor", "sit", "amet,", "consectetur", "adipiscing",
             "elit.", "Sed", "do", "eiusmod", "tempor", "2024", "naïve", "日本", "😀"]
    return " ".join(rng.choice(words) for _ in range(400)) + "\n"


def hf_split(pattern, text):
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    return [piece for piece, _ in split.pre_tokenize_str(text)]


def smollm_split(text):
    seq = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.Split(Regex(GPT2), behavior="isolated")])
    return [piece for piece, _ in seq.pre_tokenize_str(text)]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def smollm_pre_tokenizer():
    # SmolLM2's own tokenizer.json (HuggingFaceTB/SmolLM2-135M-Instruct) and
    # llama.cpp's "smollm" rule: every digit alone, then the GPT-2 regex.
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])


def tokenizer_golden(tok, strings):
    backend = tok.backend_tokenizer
    # NOTE: transformers' GGUF loader builds the "smollm" pre-tokenizer as a
    # bare ByteLevel and drops the Digits step of the model's real tokenizer.
    # We restore it. The two disagree on non-ASCII numerals (½, ①, ٣...) and
    # on whitespace before a digit ("\n\n1": the Digits step keeps "\n\n"
    # whole); the count is reported.
    plain = {s: tok.encode(s, add_special_tokens=False) for s in strings}
    backend.pre_tokenizer = smollm_pre_tokenizer()

    # The model's own behaviour: add_special_tokens=True adds what the model
    # adds (for SmolLM2 nothing: add_bos_token is false in the GGUF).
    rows = []
    n_differ = 0
    for s in strings:
        ids = tok.encode(s, add_special_tokens=True)
        assert ids == tok.encode(s, add_special_tokens=False), f"HF adds tokens to {s!r}"
        n_differ += ids != plain[s]
        rows.append({"text": s, "ids": ids})
    write_jsonl(os.path.join(OUT, "smollm2_ids.jsonl"), rows)
    print(f"{n_differ} of {len(rows)} strings differ from transformers' GGUF conversion, "
          "which lacks the Digits step")

    # A variant the C++ test builds from the committed tokenizer.json (regex
    # Splits instead of Digits and ByteLevel's regex): same ids, checked here.
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
        pre_tokenizers.Split(Regex(GPT2), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    for row in rows:
        got = backend.encode(row["text"], add_special_tokens=False).ids
        assert got == row["ids"], f"split variant differs on {row['text']!r}"
    backend.pre_tokenizer = smollm_pre_tokenizer()

    # Round trip through HF's own decoder, for information only.
    n_exact = sum(tok.decode(r["ids"]) == r["text"] for r in rows)
    print(f"{len(rows)} strings, HF decode round trip exact for {n_exact}")

    tdir = os.path.join(OUT, "smollm2")
    os.makedirs(tdir, exist_ok=True)
    backend.save(os.path.join(tdir, "tokenizer.json"), pretty=False)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        shutil.copy(os.path.join(tmp, "tokenizer_config.json"), tdir)


def pretok_golden(strings):
    rows = []
    for s in strings:
        rows.append({"text": s, "gpt2": hf_split(GPT2, s), "smollm": smollm_split(s),
                     "llama3": hf_split(LLAMA3, s), "qwen2": hf_split(QWEN2, s)})
    write_jsonl(os.path.join(OUT, "pretok_golden.jsonl"), rows)


def chat_golden(tok):
    conversations = [
        [],
        [{"role": "user", "content": "Hello!"}],
        [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "What is 2+2?"},
         {"role": "assistant", "content": "4"},
         {"role": "user", "content": "And 3+3?"}],
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Name a colour."},
         {"role": "assistant", "content": "Blue."},
         {"role": "user", "content": "Another?"},
         {"role": "assistant", "content": "Red."}],
        [{"role": "user", "content": "  padded with spaces \n\n"}],
        [{"role": "user", "content": "\u3000ideographic space and nbsp\u00a0"}],
        [{"role": "system", "content": "\tSystem with tab\n"},
         {"role": "user", "content": "multi\nline\n\ncontent"}],
        [{"role": "user", "content": "unicode: café 日本語 😀 👨‍👩‍👧"}],
        [{"role": "user", "content": ""}],
        [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "OK"}],
        [{"role": "user", "content": "quotes ' \" and braces {{ }} {% %}"}],
    ]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    templates = {
        "smollm2": tok.chat_template,
        "llama3": LLAMA3_TEMPLATE,
        "qwen25": QWEN25_TEMPLATE,
    }
    cases = []
    for name, text in templates.items():
        template = env.from_string(text)
        for messages in conversations:
            if name == "qwen25" and not messages:
                continue  # that template reads messages[0]
            for gen in (False, True):
                rendered = template.render(messages=messages, add_generation_prompt=gen,
                                           bos_token="<|begin_of_text|>")
                if name == "smollm2" and messages:
                    via_hf = tok.apply_chat_template(messages, tokenize=False,
                                                     add_generation_prompt=gen)
                    assert via_hf == rendered, (via_hf, rendered)
                cases.append({"template": name, "messages": messages,
                              "add_generation_prompt": gen, "rendered": rendered})
    with open(os.path.join(OUT, "chat_golden.json"), "w", encoding="utf-8") as f:
        json.dump({"templates": templates, "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"{len(cases)} chat renderings")


def main():
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_GGUF
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path),
                                        gguf_file=os.path.basename(gguf_path))
    rng = random.Random(20240601)
    strings = hand_written() + random_strings(rng, 200) + [long_text(rng)]
    os.makedirs(OUT, exist_ok=True)
    tokenizer_golden(tok, strings)
    pretok_golden(strings)
    chat_golden(tok)


if __name__ == "__main__":
    main()
