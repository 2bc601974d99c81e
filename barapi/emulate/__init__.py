"""Loopback emulators of paid prediction APIs, answering from a real local model.

`ClarifaiEmulator` serves ``clarifai.api.V2/PostModelOutputs`` with a `grpc.aio` server built
from the `clarifai-grpc` package, on 127.0.0.1 only. Its concepts come from a local box
(`barapi.adapters.boxes`): by default ``imagenet`` — EfficientNet-Lite0's probabilities summed
over meaningful groups of ImageNet classes, whose "safe" saturates near 1 on ordinary images
as a real moderation service's does; or ``nudenet`` (a nudity detector, through
onnxruntime); or ``modk``, the easy box (ImageNet class i counted towards concept i mod K).
The request's model_id picks the view (moderation or nsfw). It checks the key, counts
billable images, and injects faults on demand (`Faults`): besides the transport's, the
provider's words — answers that leave out a concept or a tag, concepts or tags renamed in the
answers (same ids), a model-info call that fails, and a model version that moves (`publish`:
"latest" becomes another box, clarifai-javascript#38).

One module per provider (`clarifai`, `azure`), what they share in `common`; everything is
importable from `barapi.emulate`.
"""

from barapi.emulate.azure import AzureEmulator
from barapi.emulate.clarifai import MAX_MESSAGE_BYTES, ClarifaiEmulator, ClarifaiEmulatorThread
from barapi.emulate.common import (
    DROP,
    HOST,
    Answer,
    Boxes,
    Counters,
    Faults,
    LoopbackHTTPServer,
    TokenBucket,
    box_version,
    concept_scores,
    fold,
    fold_matrix,
    write_counters,
)

__all__ = ["DROP", "HOST", "MAX_MESSAGE_BYTES", "Answer", "AzureEmulator", "Boxes",
           "ClarifaiEmulator", "ClarifaiEmulatorThread", "Counters", "Faults",
           "LoopbackHTTPServer", "TokenBucket", "box_version", "concept_scores", "fold",
           "fold_matrix", "write_counters"]
