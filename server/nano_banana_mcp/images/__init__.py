"""Image files, with no network: what an image may be, how it is decoded, read, named, finished and labelled.

Whoever sent it, an image is opened only as one of the allowed formats (:mod:`.formats`), and never more than the
pixel cap is decoded, within one process-wide budget (:mod:`.decoding`). A reference image is read from the very
file that was checked (:mod:`.reading`). An output gets a name the server chooses (:mod:`.naming`), then is
finished in the format asked (:mod:`.finishing`) with what made it written into its own metadata
(:mod:`.provenance`).

Pillow is imported only when an image is actually opened, so the server starts without it.
"""
