"""The board: the samna adapter (the only module that imports samna), the device session, the live
camera (a board's own DVS, or a recording replayed through the exact simulator) and deploy."""
