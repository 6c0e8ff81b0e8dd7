"""refnet.kernels: pure array functions (NCHW), a readable float64 reference and a fast
float32 path for every op. They know nothing of graphs or files.

Each op family lives in one module (conv, pool, activation, norm, softmax, tensor,
detection, roi, style); the reference version of op ``f`` is ``f_reference`` beside it.
The backward (vector-Jacobian) twins ``f_backward`` / ``f_backward_reference`` live in the
``grad_*`` modules.
"""

from refnet.kernels import (
    _numpy_twins,  # noqa: F401  (attaches the NumPy twins of jitted helpers)
    geometry,  # noqa: F401  (output sizes, pad/pair readers: K.geometry.*)
)
from refnet.kernels.activation import *  # noqa: F403
from refnet.kernels.conv import *  # noqa: F403
from refnet.kernels.detection import *  # noqa: F403
from refnet.kernels.elementwise import *  # noqa: F403,E402
from refnet.kernels.grad_activation import *  # noqa: F403
from refnet.kernels.grad_conv import *  # noqa: F403
from refnet.kernels.grad_norm import *  # noqa: F403
from refnet.kernels.grad_pool import *  # noqa: F403
from refnet.kernels.grad_tensor import *  # noqa: F403
from refnet.kernels.layout import *  # noqa: F403,E402
from refnet.kernels.linalg import *  # noqa: F403,E402
from refnet.kernels.norm import *  # noqa: F403
from refnet.kernels.normalize import *  # noqa: F403,E402
from refnet.kernels.pool import *  # noqa: F403
from refnet.kernels.reduce import *  # noqa: F403,E402
from refnet.kernels.resize import *  # noqa: F403,E402
from refnet.kernels.roi import *  # noqa: F403,E402
from refnet.kernels.softmax import *  # noqa: F403
from refnet.kernels.style import *  # noqa: F403
from refnet.kernels.tensor import *  # noqa: F403
from refnet.kernels.window import *  # noqa: F403,E402
from refnet.kernels.yolo import *  # noqa: F403
