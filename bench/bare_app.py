"""The framework's ceiling: a bare FastAPI app answering the same JSON as /healthz."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
