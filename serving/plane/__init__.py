"""What every protocol shares: the data plane and the pieces it is made of.

`data_plane.DataPlane` takes each protocol's `InferenceRequest` through the
same steps: input checks (`inputs`), fair admission (`admission`, within
`limits`), request bytes in flight (`inflight`), dynamic batching
(`batching`), the served models (`registry`, `backends`), cancellation at the
deadline (`cancellation`), statistics (`statistics`), who the client is
(`clients`), and the errors every protocol answers (`errors`).
"""
