"""ImageFolder data: listing (files), safe decoding (decode), transforms and the parallel pipelines."""
from .files import IMAGE_EXTENSIONS, DataError, ImageList, list_split
from .pipeline import eval_dataset, train_dataset
from .transforms import Preprocessing, preprocessing

__all__ = ["IMAGE_EXTENSIONS", "DataError", "ImageList", "list_split", "eval_dataset", "train_dataset",
           "Preprocessing", "preprocessing"]
