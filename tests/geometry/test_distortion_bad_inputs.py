"""check_distortion on bad models / coefficients: ValueError naming the accepted models (no OpenCV needed)."""
from __future__ import annotations

import pytest

from geodepth.geometry.distortion import check_distortion


@pytest.mark.parametrize("model", [[1], {"plumb_bob": 5}, None, 5])
def test_check_distortion_unhashable_or_non_string_model(model):
    accepted = r"expected one of \['plumb_bob', 'rational_polynomial'\]"
    with pytest.raises(ValueError, match=r"unknown distortion model .*" + accepted):
        check_distortion([0.1, 0.0, 0.0, 0.0], model)


def test_calib_dict_with_a_list_as_distortion_model():
    from geodepth.io import parse_calib_dict

    d = {"fx": 1, "fy": 1, "cx": 1, "cy": 1, "width": 2, "height": 2,
         "distortion": {"distortion_model": [1], "D": [0.1, 0.0, 0.0, 0.0]}}
    with pytest.raises(ValueError, match=r"c\.yaml: unknown distortion model \[1\]; expected one of"):
        parse_calib_dict(d, "c.yaml", require_extrinsics=False)


def test_check_distortion_rejects_a_string_of_digits():
    with pytest.raises(ValueError, match="must be numbers, got '1234'"):
        check_distortion("1234")
