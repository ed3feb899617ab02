"""MP4 encoding of rendered frames with the ffmpeg binary shipped in the imageio-ffmpeg wheel."""

import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np


def encode_mp4(frames, fps):
    """H.264 (yuv420p) MP4 bytes of uint8 `frames` shaped (count, height, width, 3), moov atom first."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"expected uint8 frames of shape (n, h, w, 3), got {frames.dtype} {frames.shape}")
    # yuv420p halves the chroma planes, so H.264 needs even sides: repeat the last row/column.
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    count, height, width, _ = frames.shape
    with tempfile.TemporaryDirectory() as tmp:
        # +faststart rewrites the file once encoded, which needs a seekable output, not a pipe.
        path = Path(tmp) / "video.mp4"
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
            "-an", "-c:v", "libx264", "-profile:v", "high", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", str(path),
        ]
        result = subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg exited with {result.returncode}: {result.stderr.decode()[-500:]}")
        return path.read_bytes()
