"""The time budget really stops libvips; no test here asserts a duration."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import pyvips

from darkroom.config import Limits
from darkroom.engine import budget as watchdog_module
from darkroom.engine.budget import Budget
from darkroom.errors import DarkroomError, Unprocessable
from darkroom.plan import Blur, Resize

from .helpers import one, png, read, run

# Three wide blurs over a 15-megapixel page take many seconds on any machine: far past 0.2 s.
HEAVY = (Blur(sigma=80),) * 3
TIGHT = Limits(time_budget_s=0.2)


def test_budget_within_its_deadline_does_not_raise():
    Budget(60).check()


def test_budget_past_its_deadline_raises_422():
    budget = Budget(1e-6)
    time.sleep(0.01)
    with pytest.raises(Unprocessable) as raised:
        budget.check()
    assert (raised.value.status, raised.value.code) == (422, "time_budget_exceeded")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_heavy_multipage_tiff_is_stopped(fmt):
    with pytest.raises(DarkroomError) as raised:
        run(read(one("multi-page")), *HEAVY, format=fmt, limits=TIGHT)
    assert (raised.value.status, raised.value.code) == (422, "time_budget_exceeded")


def test_heavy_synthetic_png_is_stopped():
    noisy = pyvips.Image.gaussnoise(2000, 2000, mean=128, sigma=40).cast("uchar")
    data = png(noisy.bandjoin([noisy, noisy]).copy(interpretation="srgb"))
    with pytest.raises(DarkroomError) as raised:
        run(data, *HEAVY, limits=TIGHT)
    assert (raised.value.status, raised.value.code) == (422, "time_budget_exceeded")


def test_engine_still_works_after_a_kill():
    with pytest.raises(DarkroomError):
        run(read(one("multi-page")), *HEAVY, limits=TIGHT)
    result = run(read(one("multi-page")), Resize(width=100), limits=TIGHT)
    assert (result.width, result.format) == (100, "png")


SMART_CROPS_THEN_MORE_STEPS = textwrap.dedent("""
    import gc
    import pyvips
    from darkroom.config import Limits
    from darkroom.engine import render
    from darkroom.plan import Blur, EditPlan, Resize, Trim
    red = (pyvips.Image.black(200, 100) + [255, 0, 0]).cast("uchar")
    data = red.copy(interpretation="srgb").embed(20, 20, 240, 140, extend="white")
    data = data.pngsave_buffer()
    plans = [EditPlan(ops=(Resize(width=50, height=50, fit="cover", gravity=g), Blur(sigma=1)))
             for g in ("attention", "entropy")] + [EditPlan(ops=(Trim(), Blur(sigma=1)))]
    for _ in range(30):
        for plan in plans:
            render(plan, data, Limits())
            garbage = [object() for _ in range(1000)]
            gc.collect()
""")


def test_watched_images_outlive_the_step_that_armed_them():
    # Steps arm a frame, then drop it while later images are still made from it; the
    # budget holds every armed image until the render ends, so the watchdog never kills
    # a freed one (which would end the whole process). So this runs in a child process.
    done = subprocess.run([sys.executable, "-c", SMART_CROPS_THEN_MORE_STEPS],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_watchdog_stops_an_evaluation_from_its_own_thread():
    heavy = (pyvips.Image.black(3000, 3000, bands=3) + 128).gaussblur(80).gaussblur(80)
    budget = Budget(0.2)
    try:
        with pytest.raises(pyvips.Error, match="killed"):
            budget.watch(heavy).jpegsave_buffer()
        assert budget.killed
        with pytest.raises(Unprocessable):
            budget.check()
    finally:
        budget.release()


def test_a_released_budget_is_disarmed_and_lets_its_images_go():
    budget = Budget(60)
    budget.watch(pyvips.Image.black(10, 10))
    assert budget in watchdog_module._WATCHDOG._armed
    budget.release()
    assert budget not in watchdog_module._WATCHDOG._armed and not budget._watched
