"""Where audio leaves the appliance: HTTP (`http_api`), WebSocket (`websocket_tts`), the web page (`web/`)."""
