"""The routes: thin, as CLI commands are. Each checks access, hands blocking work (decoding,
the CNN, the kNN search, SQLite) to a thread or to the micro-batcher, and returns a model of
`models.py`. Errors are raised as `ApiError`s or library errors; `errors.py` answers them."""


import time
from pathlib import Path as FilePath
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..index import QueryResult
from .errors import BadParameter, NotAnImage
from .metrics import CONTENT_TYPE
from .models import (AddResponse, DeleteResponse, ErrorResponse, ImageOut, IndexOut, SearchResponse, Status,
                     VectorQuery)
from .state import Service
from .uploads import Upload, check_upload, decode

STATIC = FilePath(__file__).parent / "static"
MAX_ID = 2**63 - 1
ImageId = Annotated[int, Path(ge=0, le=MAX_ID, description="an image's id in the index")]
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 415, 422, 503)}


def _form_body(field: str, many: bool) -> dict:
    """OpenAPI for a multipart body with file field `field` (one, or an array)."""
    item = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": item} if many else item
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": [field], "properties": {field: schema}}}}}}


def thumbnail_url(image_id: int) -> str:
    return f"/v1/images/{image_id}/thumbnail"


def build_router(service: Service) -> APIRouter:
    """The routes over `service` (made per app, so that bounds such as max_k come from its settings)."""
    settings = service.settings
    max_k = settings.max_k
    K = Annotated[int, Query(ge=1, le=max_k, description=f"neighbours to return, 1 to {max_k}")]

    def read_access(request: Request) -> None:
        service.keys.check_read(request.headers.get("authorization"))

    def write_access(request: Request) -> None:
        service.keys.check_write(request.headers.get("authorization"))

    api = APIRouter(prefix="/v1", responses=ERRORS, dependencies=[Depends(read_access)])
    plain = APIRouter()

    # -- the page and the service's own state ----------------------------------------------
    @plain.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @plain.get("/healthz", response_model=Status, summary="The process answers")
    async def healthz():
        return Status(status="ok")

    @plain.get("/readyz", response_model=Status, summary="The model and the index are loaded",
               responses={503: {"model": ErrorResponse}})
    async def readyz():
        service.require_ready()
        return Status(status="ready", count=service.searcher.count)

    @plain.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def metrics():
        return PlainTextResponse(service.metrics.text(), media_type=CONTENT_TYPE)

    # -- reading ---------------------------------------------------------------------------
    @api.get("/index", response_model=IndexOut, summary="What the index holds and how it was made")
    async def index_info():
        return IndexOut(**await run_in_threadpool(service.about))

    @api.post("/search", response_model=SearchResponse, summary="Search by an uploaded image",
              openapi_extra=_form_body("image", many=False))
    async def search(request: Request, k: K = 10):
        start = time.perf_counter()
        service.require_ready()
        service.check_k(k)
        (data,) = await _uploads(request, "image", most=1)
        upload, pixels = await run_in_threadpool(_decoded, data, settings, service.input_size)
        D, I = await service.batcher.search(k, pixels=pixels)
        result = await run_in_threadpool(service.results, upload.name, D, I)
        return _search_response(result, k, start)

    @api.post("/search/vector", response_model=SearchResponse, summary="Search by a feature vector")
    async def search_vector(query: VectorQuery):
        start = time.perf_counter()
        service.require_ready()
        service.check_k(query.k)
        vector = np.asarray(query.vector, dtype=np.float64)
        if vector.shape != (service.dim,):
            raise BadParameter(f"vector has {len(query.vector)} values; this index holds {service.dim}-d vectors",
                               code="wrong_dimension")
        searched = vector.astype(np.float32)
        if not np.isfinite(searched).all():
            raise BadParameter("vector has values beyond float32's range (about +-3.4e38)")
        if service.index.metric == "cosine" and not searched.any():  # every image at distance 1: no answer
            raise BadParameter("vector is all zeros (in float32, as it is searched): this index measures cosine "
                               "distance (angles), and a zero vector has no direction", code="zero_vector")
        D, I = await service.batcher.search(query.k, vector=searched)
        result = await run_in_threadpool(service.results, "vector", D, I)
        return _search_response(result, query.k, start)

    @api.get("/images/{image_id}", response_model=ImageOut, summary="An indexed image's metadata")
    async def image(image_id: ImageId):
        meta = await run_in_threadpool(service.image, image_id)
        return ImageOut(id=meta["id"], key=meta["key"], label=meta["label"], added=meta["added"],
                        thumbnail=thumbnail_url(meta["id"]))

    @api.get("/images/{image_id}/thumbnail", response_class=Response, summary="An indexed image's thumbnail",
             responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}})
    async def thumbnail(image_id: ImageId):
        data, media_type = await run_in_threadpool(service.thumbnail, image_id)
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/images/{image_id}/similar", response_model=SearchResponse,
             summary="Search by an indexed image (itself left out)")
    async def similar(image_id: ImageId, k: K = 10):
        start = time.perf_counter()
        searcher = service.require_ready()
        service.check_k(k, by_id=True)
        (result,) = await run_in_threadpool(searcher.search_ids, [image_id], k)
        return _search_response(result, k, start)

    # -- writing ---------------------------------------------------------------------------
    @api.post("/images", response_model=AddResponse, dependencies=[Depends(write_access)],
              summary="Add uploaded images to the index (write scope)", openapi_extra=_form_body("images", many=True))
    async def add(request: Request):
        start = time.perf_counter()
        service.require_ready()
        files = await _uploads(request, "images", most=settings.max_add_images)
        # every file decodes, or nothing is added
        uploads = [(await run_in_threadpool(_decoded, f, settings, service.input_size))[0] for f in files]
        added, duplicates = await run_in_threadpool(service.add, uploads)
        return AddResponse(added=added, duplicates=duplicates, count=service.searcher.count,
                           took_ms=(time.perf_counter() - start) * 1000)

    @api.delete("/images/{image_id}", response_model=DeleteResponse, dependencies=[Depends(write_access)],
                summary="Delete an image from the index (write scope)")
    async def delete(image_id: ImageId):
        await run_in_threadpool(service.remove, image_id)
        return DeleteResponse(deleted=image_id, count=service.searcher.count)

    router = APIRouter()
    router.include_router(plain)
    router.include_router(api)
    return router


async def _uploads(request: Request, field: str, *, most: int) -> list[tuple[bytes, str]]:
    """(content, client's name) of each file of multipart field `field` (1 to `most` of them)."""
    body = await request.body()
    if not body:
        raise BadParameter(f"empty request: send {'one image' if most == 1 else 'images'} as multipart/form-data "
                           f"field '{field}'", code="missing_image")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise NotAnImage(f"send the image as multipart/form-data, field '{field}' (got Content-Type "
                         f"{request.headers.get('content-type', 'none')!r})", code="not_multipart")
    form = await request.form(max_files=most + 1, max_fields=most + 8)
    files = form.getlist(field)
    if not files:
        raise BadParameter(f"no field '{field}' in the form: send {'one image' if most == 1 else 'images'} as "
                           f"multipart field '{field}'", code="missing_image")
    if any(not isinstance(f, UploadFile) for f in files):
        raise BadParameter(f"field '{field}' must be a file, not text", code="missing_image")
    if len(files) > most:
        what = "one image per search" if most == 1 else f"at most {most} images per request"
        raise BadParameter(f"{what}; got {len(files)}", code="too_many_images")
    return [(await f.read(), f.filename or "upload") for f in files]


def _decoded(file: tuple[bytes, str], settings, size: int) -> tuple[Upload, np.ndarray]:
    """An upload checked (`check_upload`) and decoded at `size`, in one trip to a thread."""
    upload = check_upload(file[0], file[1], max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    return upload, decode(upload, size)


def _search_response(result: QueryResult, k: int, start: float) -> SearchResponse:
    return SearchResponse(query=result.query, k=k, took_ms=(time.perf_counter() - start) * 1000,
                          neighbours=[{"rank": n.rank, "distance": n.distance, "id": n.id, "key": n.key,
                                       "label": n.label, "thumbnail": thumbnail_url(n.id)}
                                      for n in result.neighbours])
