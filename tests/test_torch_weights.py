"""The legacy .pth reader: real weights, and refusal of anything that would run code."""

import io
import os
import pickle

import pytest

from imgsim.approaches.features import lite_source_file
from imgsim.approaches.torch_weights import UnsafeWeightsError, WeightsFormatError, read_legacy_state_dict


def test_lite0_state_dict_has_every_tensor():
    state = read_legacy_state_dict(lite_source_file())
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == 4_694_073
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_file_calling_a_forbidden_global_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump({"weight": Evil()}, buf, protocol=2)
    path.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeWeightsError, match="posix.system|os.system"):
        read_legacy_state_dict(path)


def test_a_zip_checkpoint_is_refused_clearly(tmp_path):
    path = tmp_path / "new.pth"
    path.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(WeightsFormatError, match="not a legacy"):
        read_legacy_state_dict(path)
