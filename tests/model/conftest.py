import pytest
import torch

from tests.model.helpers import randomize, tiny_stdit


@pytest.fixture
def model():
    torch.manual_seed(0)
    return randomize(tiny_stdit()).eval()
