"""README.md as a new user follows it: its shell commands run as written against a real
node, and none of them holds a placeholder the shell would take for a redirection."""
import json
import re
import subprocess
from pathlib import Path

from support import ROOT, Clients, unique_id, wait_until, without_place

README = Path(ROOT, "README.md").read_text(encoding="utf-8")


def shell_blocks():
    return re.findall(r"```sh\n(.*?)```", README, re.S)


def unquoted(line: str) -> str:
    """The line without its '...' and "..." parts."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "", line)


def test_shell_blocks_hold_no_angle_bracket_placeholders():
    for block in shell_blocks():
        for line in block.splitlines():
            code = unquoted(line.split("#", 1)[0])
            assert "<" not in code and ">" not in code, f"README shell line: {line}"


def test_the_shell_commands_work_as_written(make_node):
    node = make_node()  # its own: the README's msgIDs and name are fixed
    block = next(b for b in shell_blocks() if "/user/sendMessage " in b)
    name = re.search(r"^name=(\S+)$", block, re.M).group(1)
    script = block.replace("http://localhost:8080", node.http_url)
    # the README's commands address room 101; the user named there is online in it
    with Clients() as connect:
        client = connect(node)
        assert client.login(name, 101)["response"]["code"] == 200
        listener = connect(node)
        assert listener.login(unique_id("readme"), 101)["response"]["code"] == 200
        result = subprocess.run(["bash", "-e", "-c", script.replace("curl ", "curl -sS -w '\\n' ") +
                                 "\n"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        answers = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        assert len(answers) == block.count("curl ")
        assert all(a["code"] == 200 for a in answers), answers
        assert name in answers[0]["data"]["userList"]
        assert without_place(answers[2]["data"]) == {"sendResults": True}
        got = wait_until(lambda: client.push("msg"), timeout=5, what="the pushes")
        texts = {got["response"]["data"]["msg"], client.push("msg")["response"]["data"]["msg"]}
        assert texts == {"hello, room", "hi"}
