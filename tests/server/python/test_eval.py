"""`lagserve eval` end to end on the default model: the score of a JSONL of
prompt/answer pairs whose answers come from `lagserve generate` (another path
through the engine), the CSV rows and the PNG plot of a task sweep (the PNG
read back with zlib, its CRCs checked), and clear errors for bad input.

Run: build/venv/bin/python -m pytest tests/server/python/test_eval.py
"""
import csv
import json
import re
import struct
import subprocess
import zlib

from conftest import BINARY, DEVICE

PROMPTS = ["The capital of France is", "The largest planet in the solar system is",
           "Water boils at a temperature of", "The first man on the moon was"]
LINE_BLUE = (31, 119, 180)  # the first line's colour (server/eval_plot.cpp)


def lagserve(*args, timeout=600):
    device = ["--device", DEVICE] if DEVICE else []
    return subprocess.run([BINARY, *args, *device], capture_output=True, text=True, timeout=timeout)


def greedy_first_words(tmp_path):
    """The first word of each prompt's greedy continuation, from `generate`."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = lagserve("generate", "--prompts", str(prompts), "--max-tokens", "6")
    assert out.returncode == 0, out.stderr
    words = []
    for line in out.stdout.splitlines():
        m = re.match(r"\s*([A-Za-z0-9]+)", json.loads(line)["text"])
        assert m, line
        words.append(m.group(1))
    return words


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_png(path):
    """(width, height, rows of RGB triples) of an 8-bit RGB PNG; checks every CRC."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, header = 8, b"", None
    while at < len(data):
        n, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + n]
        (crc,) = struct.unpack(">I", data[at + 8 + n:at + 12 + n])
        assert zlib.crc32(kind + body) == crc, kind
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        at += 12 + n
    width, height, depth, colour, _, _, interlace = header
    assert (depth, colour, interlace) == (8, 2, 0)
    raw = zlib.decompress(idat)
    stride = width * 3 + 1
    assert len(raw) == height * stride
    rows = []
    for y in range(height):
        assert raw[y * stride] == 0  # no filter
        line = raw[y * stride + 1:(y + 1) * stride]
        rows.append([tuple(line[i:i + 3]) for i in range(0, len(line), 3)])
    return width, height, rows


def test_own_answers_score_all_and_swapped_answers_none(tmp_path):
    words = greedy_first_words(tmp_path)
    right, wrong = tmp_path / "right.jsonl", tmp_path / "wrong.jsonl"
    right.write_text("".join(json.dumps({"prompt": p, "answer": w}) + "\n"
                             for p, w in zip(PROMPTS, words)))
    # Each prompt with the next prompt's answer (all four differ).
    assert len(set(words)) == len(words), words
    wrong.write_text("".join(json.dumps({"prompt": p, "completion": " " + words[(i + 1) % 4]}) + "\n"
                             for i, p in enumerate(PROMPTS)))
    for data, correct in ((right, 4), (wrong, 0)):
        table = tmp_path / f"{data.stem}.csv"
        out = lagserve("eval", "--data", str(data), "--policy", "off", "--csv", str(table),
                       "--plot", "")
        assert out.returncode == 0, out.stderr
        (row,) = read_csv(table)
        assert row["task"] == data.stem and row["policy"] == "off" and row["compression"] == "1"
        assert (int(row["samples"]), int(row["correct"])) == (4, correct), row
        assert float(row["accuracy"]) == correct / 4


def test_task_sweep_writes_every_row_and_the_plot(tmp_path):
    table, plot = tmp_path / "eval.csv", tmp_path / "eval.png"
    out = lagserve("eval", "--task", "passkey,facts", "--length", "256,320", "--samples", "2",
                   "--policy", "off", "--policy", "4x", "--csv", str(table), "--plot", str(plot))
    assert out.returncode == 0, out.stderr
    rows = read_csv(table)
    keys = {(r["model"], r["task"], r["length"], r["policy"]) for r in rows}
    assert keys == {("default", t, length, p) for t in ("passkey", "facts")
                    for length in ("256", "320") for p in ("off", "4x")}
    for r in rows:
        assert int(r["samples"]) == 2
        assert float(r["accuracy"]) == int(r["correct"]) / 2
        assert r["compression"] == ("1" if r["policy"] == "off" else "4")
        # Prompts of the asked length, within the generator's tolerance of 8.
        assert int(r["length"]) - 8 <= float(r["mean_prompt_tokens"]) <= int(r["length"])
    for length in (256, 320):
        assert f"default at {length} tokens:" in out.stdout
    width, height, rows_px = read_png(plot)
    assert width == 2 * 440 and height > 330  # two panels, a legend below
    blue = sum(px == LINE_BLUE for row in rows_px for px in row)
    assert blue > 500, blue  # the model's line, markers and legend swatch
    # Compressed: flat colour and repeated rows deflate to a few percent.
    assert plot.stat().st_size < height * (width * 3 + 1) / 20, plot.stat().st_size


def test_bad_input_is_one_clear_error(tmp_path):
    out = lagserve("eval", "--task", "passkey", "--length", "256", "--policy", "0x")
    assert out.returncode != 0 and "policy '0x'" in out.stderr, out.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "answer": "a"}) + "\n{\"prompt\": 1}\n")
    out = lagserve("eval", "--data", str(bad))
    assert out.returncode != 0 and f"{bad}: line 2" in out.stderr, out.stderr
    out = lagserve("eval", "--policy", "off")
    assert out.returncode != 0 and "--task and --length, or --data" in out.stderr, out.stderr
    out = lagserve("eval", "--model", "default", "--model", "default", "--task", "passkey",
                   "--length", "256")
    assert out.returncode != 0 and "two models named 'default'" in out.stderr, out.stderr
