"""The commands of README.md's code blocks, read as a shell reads them, for tests/test_readme.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, the heading above it, and its commands in order."""

    language: str
    heading: str
    commands: tuple[str, ...]


def strip_comment(line: str) -> str:
    """``line`` without its shell comment: a ``#`` at a word's start, outside quotes."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def shell_commands(body: str) -> tuple[str, ...]:
    """The logical commands of a shell block: continuation lines joined, a here-document kept with
    the command that reads it, comments and blank lines dropped."""
    commands: list[str] = []
    lines = body.splitlines()
    index = 0
    while index < len(lines):
        command = strip_comment(lines[index])
        index += 1
        while command.endswith("\\") and index < len(lines):
            command = command[:-1].rstrip() + " " + strip_comment(lines[index]).strip()
            index += 1
        heredoc = HEREDOC.search(command)
        if heredoc:  # the document's lines, up to its terminator, belong to this command
            end = next(i for i in range(index, len(lines)) if lines[i].strip() == heredoc.group(1))
            command = "\n".join([command, *lines[index : end + 1]])
            index = end + 1
        if command.strip():
            commands.append(command.strip())
    return tuple(commands)


def blocks(readme: Path) -> list[Block]:
    """Every fenced block of ``readme``, shell blocks split into commands, others whole."""
    text = readme.read_text()
    found = []
    for match in FENCE.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.MULTILINE)
        language, body = match.group(1), match.group(2)
        commands = shell_commands(body) if language in ("bash", "sh", "shell") else (body,)
        found.append(Block(language, headings[-1] if headings else "", commands))
    return found
