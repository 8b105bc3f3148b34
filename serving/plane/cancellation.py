"""The cancellation of a timed-out request's work in the inference threads."""

import onnxruntime


class Cancelled(Exception):
    """Work stopped because its request is past its deadline (already answered 504)."""


class Cancellation:
    """Lets the event loop stop a worker's work: an onnxruntime run (`RunOptions.terminate`), or
    Python work that calls `stop_if_cancelled` as it goes (decoding images)."""

    def __init__(self):
        self.run_options = onnxruntime.RunOptions()
        self.cancelled = False

    def cancel(self):
        self.cancelled = True
        self.run_options.terminate = True

    def stop_if_cancelled(self):
        if self.cancelled:
            raise Cancelled()
