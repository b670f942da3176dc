"""Media: RTMP ingest and play, HTTP-FLV, LL-HLS, the per-stream hub, recording."""
