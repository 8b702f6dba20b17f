"""The study's Countdown reward rules as a plain Python reference (written for this project
from the rules in shared/reference/PAPER.md, which follow TinyZero's countdown reward):
the answer is the last <answer>...</answer> on the last line after the first "Assistant:"
(else after "<|im_start|>assistant"), stripped by str.strip; its runs of digits must be
the given numbers; it may hold only digits, + - * / ( ) . and whitespace (Python's \\d and
\\s); Python's eval gives its value, which scores 1.0 within 1e-5 of the target. Any
exception on the way scores 0.1. Reads JSON lines {text, target, nums} on stdin, writes
one score per line.
"""
import json
import re
import sys
import warnings

# `(5)(3)` makes the compiler warn before eval fails; the warning is not a score.
warnings.simplefilter("ignore", SyntaxWarning)


def extract(text):
    if "Assistant:" in text:
        text = text.split("Assistant:", 1)[1]
    elif "<|im_start|>assistant" in text:
        text = text.split("<|im_start|>assistant", 1)[1]
    else:
        return None
    line = text.split("\n")[-1]
    found = list(re.finditer(r"<answer>(.*?)</answer>", line))
    return found[-1].group(1).strip() if found else None


def uses_the_numbers(equation, nums):
    try:
        return sorted(int(n) for n in re.findall(r"\d+", equation)) == sorted(nums)
    except Exception:
        return False


def value(equation):
    try:
        if not re.match(r"^[\d+\-*/().\s]+$", equation):
            return None
        return eval(equation, {"__builtins__": None}, {})
    except Exception:
        return None


def score(text, target, nums):
    equation = extract(text)
    if equation is None:
        return 0.0
    if not uses_the_numbers(equation, nums):
        return 0.1
    try:
        result = value(equation)
        if result is None:
            return 0.1
        return 1.0 if abs(result - target) < 1e-5 else 0.1
    except Exception:
        return 0.1


for line in sys.stdin:
    row = json.loads(line)
    print(score(row["text"], row["target"], row["nums"]))
