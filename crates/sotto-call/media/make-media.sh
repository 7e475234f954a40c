#!/usr/bin/env bash
# Regenerates the bundled test media (committed, so a fresh machine needs no ffmpeg).
# Debian ffmpeg 5.1 with libvpx and libopus.
set -euo pipefail
cd "$(dirname "$0")"
common=(-hide_banner -loglevel error -y)
# "camera 1": moving test pattern with a frame counter. 320x240, 15 fps, 4 s, key frame every 15.
ffmpeg "${common[@]}" -f lavfi -i "testsrc=size=320x240:rate=15:duration=4" \
  -c:v libvpx -b:v 200k -g 15 -keyint_min 15 -auto-alt-ref 0 -lag-in-frames 0 -f ivf camera1.ivf
# "camera 2": colour bars with a moving box, for the source switch.
ffmpeg "${common[@]}" -f lavfi -i "smptebars=size=320x240:rate=15:duration=4" \
  -vf "drawbox=x='mod(t*80,280)':y=100:w=40:h=40:color=white@1:t=fill" \
  -c:v libvpx -b:v 200k -g 15 -keyint_min 15 -auto-alt-ref 0 -lag-in-frames 0 -f ivf camera2.ivf
# All-intra twins of both clips: the same frames, each one a key frame (lower quality, to keep
# them small). On a keyframe request (PLI/FIR) or after a key change the sender sends the twin of
# its next frame, then carries on with the clip's inter frames (a little decoder drift until the
# clip's own next key frame, at most 15 frames later).
ffmpeg "${common[@]}" -f lavfi -i "testsrc=size=320x240:rate=15:duration=4" \
  -c:v libvpx -b:v 80k -qmax 63 -g 1 -keyint_min 1 -auto-alt-ref 0 -lag-in-frames 0 -f ivf camera1-intra.ivf
ffmpeg "${common[@]}" -f lavfi -i "smptebars=size=320x240:rate=15:duration=4" \
  -vf "drawbox=x='mod(t*80,280)':y=100:w=40:h=40:color=white@1:t=fill" \
  -c:v libvpx -b:v 80k -qmax 63 -g 1 -keyint_min 1 -auto-alt-ref 0 -lag-in-frames 0 -f ivf camera2-intra.ivf
# microphone: 440 Hz tone, 48 kHz stereo Opus, 20 ms frames, one packet per Ogg page.
ffmpeg "${common[@]}" -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=4" -ac 2 \
  -c:a libopus -b:a 32k -frame_duration 20 -page_duration 20000 tone.ogg
