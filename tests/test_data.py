import numpy as np
import pytest
import torch

from hpo_trainer.base.errors import DataError
from hpo_trainer.train.data import TensorBatches, make_batches, split_xy

pytestmark = pytest.mark.fast


def test_fast_path_covers_every_example_once_per_epoch_in_shuffled_order():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    batches = make_batches(
        (x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    assert isinstance(batches, TensorBatches) and len(batches) == 3
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    again = torch.cat([b[1] for b in batches])
    assert again.tolist() != seen.tolist()  # reshuffled next epoch
    for bx, by in batches:
        assert torch.equal(bx.squeeze(1).long(), by)  # inputs stay paired with targets


def test_dict_of_numpy_arrays_gives_dict_batches_in_float32():
    data = {"x": np.ones((5, 3)), "y": np.arange(5)}
    batch = next(iter(make_batches(data, batch_size=2, shuffle=False)))
    assert batch["x"].dtype == torch.float32 and batch["y"].tolist() == [0, 1]
    assert split_xy(batch)[1].tolist() == [0, 1]


def test_split_xy_names_missing_keys():
    with pytest.raises(DataError, match=r"\['y'\] is missing"):
        split_xy({"x": 1, "label": 2})


def test_bad_batch_size():
    with pytest.raises(DataError, match="batch_size must be a positive integer"):
        make_batches((torch.zeros(3),), batch_size=0, shuffle=False)
