"""Logger, Tracer and Metrics, created once per process.

The Tracer is Powertools' own, created the first time a traced handler runs rather than at
import: creating it imports the X-Ray SDK and patches the libraries it traces (botocore,
http.client...), which is most of a function's import cost on top of boto3. Patching then is
early enough (it patches classes, so clients created before are traced too), and the traces
are the same: `## lambda_handler` subsegment, ColdStart and Service annotations, response or
exception metadata, one subsegment per AWS call.
"""

import functools
import threading

from aws_lambda_powertools import Logger, Metrics

logger = Logger()
metrics = Metrics()


class LazyTracer:
    """`aws_lambda_powertools.Tracer()`, created on first use. `capture_lambda_handler` (the
    decorator, same arguments) wraps the handler with the real Tracer's decorator at its first
    call; any other attribute creates the Tracer and is read from it."""

    def __init__(self, **options):
        self._options = options
        self._tracer = None
        self._lock = threading.Lock()

    @property
    def tracer(self):
        if self._tracer is None:
            with self._lock:
                if self._tracer is None:
                    from aws_lambda_powertools import Tracer

                    self._tracer = Tracer(**self._options)
        return self._tracer

    def capture_lambda_handler(self, lambda_handler=None, capture_response=None, capture_error=None):
        if lambda_handler is None:
            return functools.partial(
                self.capture_lambda_handler, capture_response=capture_response, capture_error=capture_error
            )
        traced = None

        @functools.wraps(lambda_handler)
        def decorate(event, context, **kwargs):
            nonlocal traced
            if traced is None:
                traced = self.tracer.capture_lambda_handler(
                    lambda_handler, capture_response=capture_response, capture_error=capture_error
                )
            return traced(event, context, **kwargs)

        return decorate

    def __getattr__(self, name):
        return getattr(self.tracer, name)


tracer = LazyTracer()
