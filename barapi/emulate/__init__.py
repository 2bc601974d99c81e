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

`GoogleVisionEmulator` serves Cloud Vision ``images:annotate`` (SafeSearch from a box's
moderation view, quantised into five likelihoods; label detection from the 1,000 ImageNet
classes, top ``maxResults`` over a score floor) on 127.0.0.1.

`RekognitionEmulator` serves AWS Rekognition ``DetectModerationLabels`` over AWS's JSON
protocol on 127.0.0.1 for boto3 (``endpoint_url``): SigV4 signatures verified with botocore's
own signer, a box's concepts answered as hierarchical moderation labels, MinConfidence honoured.

`OIPEmulator` serves the Open Inference Protocol (KServe V2) over REST on 127.0.0.1: the boxes
as image models, for a rehearsal without a real server (the tests also use MLServer).

One module per provider (`clarifai`, `azure`, `google_vision`, `rekognition`, `oip`), what they share
in `common`; everything is importable from `barapi.emulate`.
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
from barapi.emulate.google_vision import GoogleVisionEmulator
from barapi.emulate.oip import OIPEmulator
from barapi.emulate.rekognition import RekognitionEmulator

__all__ = ["DROP", "HOST", "MAX_MESSAGE_BYTES", "Answer", "AzureEmulator", "Boxes",
           "ClarifaiEmulator", "ClarifaiEmulatorThread", "Counters", "Faults",
           "GoogleVisionEmulator",
           "LoopbackHTTPServer", "OIPEmulator", "RekognitionEmulator", "TokenBucket", "box_version",
           "concept_scores", "fold",
           "fold_matrix", "write_counters"]
