import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ppo_details.md"


def test_ppo_details_line_links_point_at_code():
    """Every `../hpc_rlhf/...py#LN` link of docs/ppo_details.md names an existing, non-blank line."""
    text = DOC.read_text()
    links = re.findall(r"\]\(\.\./(hpc_rlhf/[\w/]+\.py)#L(\d+)\)", text)
    assert len(links) >= 19
    for path, line in links:
        lines = (ROOT / path).read_text().splitlines()
        n = int(line)
        assert 1 <= n <= len(lines), f"{path}#L{n} is past the end ({len(lines)} lines)"
        assert lines[n - 1].strip(), f"{path}#L{n} is a blank line"
    # the 19 numbered choices are all there
    assert re.findall(r"^(\d+)\. \*\*", text, flags=re.M) == [str(i) for i in range(1, 20)]
