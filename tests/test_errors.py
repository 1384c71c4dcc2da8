"""One base class for onepixel's own errors, and the CLI's last net for them."""

from __future__ import annotations

import pytest

from onepixel.analysis.confmap import ConfmapError
from onepixel.analysis.loading import RunLoadError
from onepixel.attack.campaign import CampaignError
from onepixel.attack.selection import SelectionError
from onepixel.attack.store import StoreError
from onepixel.cli.main import OnePixelApp
from onepixel.data.patches import DataError
from onepixel.errors import OnePixelError
from onepixel.serve.uploads import UploadError
from onepixel.targets.base import TargetError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ConfmapError, ValueError),
        (RunLoadError, ValueError),
        (SelectionError, ValueError),
        (DataError, ValueError),
        (CampaignError, RuntimeError),
        (StoreError, RuntimeError),
        (TargetError, RuntimeError),
        (UploadError, Exception),
    ],
)
def test_every_error_is_a_onepixel_error_and_keeps_its_builtin_base(error: type, builtin: type) -> None:
    assert issubclass(error, OnePixelError)
    assert issubclass(error, builtin)


def test_an_uncaught_onepixel_error_is_one_error_line_and_exit_2(capsys: pytest.CaptureFixture) -> None:
    app = OnePixelApp(add_completion=False)

    @app.command()
    def boom() -> None:
        raise DataError("/data/x.png is not a PNG [broken]")

    @app.command()
    def other() -> None:
        raise KeyError("a bug")

    with pytest.raises(SystemExit) as exited:
        app(["boom"], prog_name="onepixel")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error: /data/x.png is not a PNG [broken]" in err  # markup-like text kept verbatim
    assert "Traceback" not in err
    with pytest.raises(KeyError):  # genuine bugs are not hidden
        app(["other"], prog_name="onepixel")
