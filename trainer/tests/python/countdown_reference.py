"""The study's Countdown reward rules as a plain Python reference (written for this project
from the rules in shared/reference/PAPER.md): the answer is the last <answer>...</answer>
on the last line after the first "Assistant:", checked for the given numbers and allowed
characters, then evaluated as a Python expression. Reads JSON lines {text, target, nums}
on stdin, writes one score per line.
"""
import json
import re
import sys


def extract(text):
    if "Assistant:" not in text:
        return None
    line = text.split("Assistant:", 1)[1].split("\n")[-1]
    found = re.findall(r"<answer>(.*?)</answer>", line)
    return found[-1].strip() if found else None


def score(text, target, nums):
    equation = extract(text)
    if equation is None:
        return 0.0
    try:
        used = sorted(int(n) for n in re.findall(r"\d+", equation))
    except ValueError:
        return 0.1
    if used != sorted(nums):
        return 0.1
    if not re.match(r"^[\d+\-*/()\s]+$", equation):
        return 0.1
    try:
        value = eval(equation, {"__builtins__": None}, {})
        return 1.0 if abs(value - target) < 1e-5 else 0.1
    except Exception:
        return 0.1


for line in sys.stdin:
    row = json.loads(line)
    print(score(row["text"], row["target"], row["nums"]))
