"""Resume on torch >= 2.6 without unrestricted unpickling."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

from harness.runtime.safe_resume import enable_safe_resume


def _checkpoint():
    hub = MessageHub.get_instance('safe-resume-test')
    for i in range(3):
        hub.update_scalar('train/loss', 1.0 / (i + 1))
    return {'meta': {'iter': 3, 'seed': np.int64(0)}, 'message_hub': hub.state_dict(),
            'state_dict': {'w': torch.ones(2)}}


def test_resume_checkpoint_loads_with_weights_only(tmp_path):
    enable_safe_resume()
    torch.save(_checkpoint(), tmp_path / 'iter_3.pth')
    loaded = torch.load(tmp_path / 'iter_3.pth', weights_only=True)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert buffer.current() == pytest.approx(1 / 3) and buffer.mean() == pytest.approx(11 / 18)
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))


class _Payload:
    def __reduce__(self):
        return (print, ('code ran while loading a checkpoint',))


def test_checkpoint_with_a_pickled_callable_is_refused(tmp_path, capsys):
    enable_safe_resume()
    torch.save({'meta': {}, 'payload': _Payload()}, tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match='Unsupported global'):
        torch.load(tmp_path / 'evil.pth', weights_only=True)
    assert 'code ran' not in capsys.readouterr().out
