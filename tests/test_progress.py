"""contrastlab's progress bars leave no thread behind, so forking stays available
(contrastlab._progress)."""

import subprocess
import sys

import pytest

SCRIPT = """
import threading
from contrastlab import _fork
from contrastlab._progress import progress_bar
from contrastlab.theory.bounds import idealized_bounds
assert threading.active_count() == 1
for progress in (False, None, True):
    with progress_bar(3, "test", progress) as bar:
        bar.update(3)
idealized_bounds(3, [1, 2], progress=False)
print(threading.active_count(), _fork.fork_available())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is Linux's")
def test_bars_leave_no_thread_and_fork_stays_available():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["1", "True"], out.stdout + out.stderr


def test_a_plain_tqdm_bar_would_leave_its_monitor():
    # the reason for the class: tqdm's own bars start a monitor thread that never ends
    script = ("import threading\nfrom tqdm import tqdm\nwith tqdm(total=1, disable=True): pass\n"
              "print(any(t.name.startswith('Thread') or 'Monitor' in type(t).__name__ "
              "for t in threading.enumerate() if t is not threading.main_thread()))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "True"
