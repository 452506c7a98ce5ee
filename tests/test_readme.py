"""The README's Node.js minting example makes tokens the gateway accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.events import event

README = Path(__file__).resolve().parent.parent / "README.md"


def node_example() -> str:
    blocks = [b for b in re.findall(r"```js\n(.*?)```", README.read_text(), re.S) if "function feedbackToken" in b]
    assert len(blocks) == 1, "the README lost its Node.js minting example"
    return blocks[0]


async def test_node_minted_token_is_accepted(harness):
    node = shutil.which("node")
    assert node, "node is part of this machine image; the README example is checked with it"
    await harness.trace("trace-node", "session-node")
    script = node_example() + (f"\nconsole.log(feedbackToken({harness.secret_key!r}, {harness.public_key!r},"
                               " 'trace-node', 'session-node'));\n")
    token = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    response = await harness.send(event(trace_id="trace-node", token=token))
    assert response.json()["results"][0]["status"] == "accepted"
    forged = subprocess.run([node, "-e", script.replace(harness.secret_key, "sk_wrong")], capture_output=True,
                            text=True, check=True, timeout=30).stdout.strip()
    assert (await harness.send(event(trace_id="trace-node", token=forged))).json()["results"][0]["error"] == \
        "invalid_token"
