"""Writes to the amoCRM sandbox: OAuth tokens and Bearer checks, custom field creation,
batch PATCH of contacts and companies (validated as a whole, like amoCRM; `created_at` /
`updated_at` in an item date the write, back if the writer likes, as the API documents)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime

from sandbox.amocrm.common import EMAIL_FIELD, PHONE_FIELD, PROBLEM, SINGULAR, ApiError, problem
from sandbox.httpbase import Request, Response

FIELD_TYPES = {
    "text",
    "numeric",
    "checkbox",
    "select",
    "multiselect",
    "date",
    "date_time",
    "url",
    "textarea",
    "radiobutton",
    "streetaddress",
    "birthday",
    "monetary",
}


class AmoWrite:
    """Mixin for AmoSandbox: auth and the write endpoints."""

    # ---- auth ----------------------------------------------------------------------------
    def _authorised(self, req: Request) -> bool:
        header = req.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return False
        token = header[7:].strip()
        if self.access_token and secrets.compare_digest(token, self.access_token):
            return True
        with self._auth_lock:
            return self._access.get(token, 0.0) > time.time()

    def _oauth(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, "Request body must be JSON")

        def oauth_error(status, hint):
            return Response.json(
                {
                    "hint": hint,
                    "title": "Некорректный запрос",
                    "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                    "status": status,
                    "detail": "В запросе отсутствует ряд параметров или параметры невалидны",
                },
                status,
                PROBLEM,
            )

        if body.get("client_id") != self.client_id or body.get("client_secret") != self.client_secret:
            return oauth_error(401, "Client authentication failed")
        if body.get("redirect_uri") != self.redirect_uri:
            return oauth_error(400, "Redirect URI mismatch")
        grant = body.get("grant_type")
        with self._auth_lock:
            if grant == "authorization_code":
                code = body.get("code")
                if code not in self._codes:
                    return oauth_error(400, "Authorization code has been revoked")
                self._codes.discard(code)
            elif grant == "refresh_token":
                rt = body.get("refresh_token")
                if not self._refresh.get(rt):
                    return oauth_error(401, "Token has been revoked")
                self._refresh[rt] = False  # single use: the old one stops working
            else:
                return oauth_error(400, "Unsupported grant type")
            access = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(48)
            refresh = "def50200" + secrets.token_hex(48)
            self._access[access] = time.time() + self.token_ttl
            self._refresh[refresh] = True
        return Response.json(
            {
                "token_type": "Bearer",
                "expires_in": self.token_ttl,
                "server_time": int(time.time()),
                "access_token": access,
                "refresh_token": refresh,
            }
        )

    # ---- writes --------------------------------------------------------------------------
    def _body_list(self, req: Request) -> list:
        try:
            body = req.json()
        except ValueError:
            raise ApiError(400, "Request body is not valid JSON") from None
        if isinstance(body, dict):
            body = [body]
        if not isinstance(body, list) or not body or not all(isinstance(i, dict) for i in body):
            raise ApiError(400, "Request body must be a non-empty JSON array of objects")
        return body

    def _create_fields(self, req: Request, plural: str) -> Response:
        if not self.is_admin:
            raise ApiError(403, "Insufficient rights")
        items, et = self._body_list(req), SINGULAR[plural]
        codes = {f["code"] for f in self._predefined(et) + self.dataset.fields[et] if f["code"]}
        errors = []
        for i, item in enumerate(items):
            errs = []
            if item.get("type") not in FIELD_TYPES:
                errs.append(
                    _err("NotSupportedChoice", "type", "The value you selected is not a valid choice.")
                )
            if not isinstance(item.get("name"), str) or not item["name"].strip():
                errs.append(_err("NotBlank", "name", "This value should not be blank."))
            code = item.get("code")
            if code is not None and (not isinstance(code, str) or code in codes):
                errs.append(_err("NotUnique", "code", "This value is already used."))
            codes.add(code)
            if errs:
                errors.append({"request_id": str(item.get("request_id", i)), "errors": errs})
        if errors:
            return _validation(errors)
        created = []
        for i, item in enumerate(items):
            extra = {"sort": int(item.get("sort") or 500), "is_api_only": bool(item.get("is_api_only"))}
            if item.get("enums"):
                extra["enums"] = [
                    {"id": 810_000 + len(self.dataset.fields[et]) * 100 + j, "value": str(e.get("value"))}
                    for j, e in enumerate(item["enums"])
                ]
            f = self.dataset.add_field(et, item["name"], item["type"], code=item.get("code"), **extra)
            created.append({**self._field(f, plural), "request_id": str(item.get("request_id", i))})
        return self._hal({"_total_items": len(created), "_embedded": {"custom_fields": created}}, 201)

    def _patch(self, req: Request, plural: str, one_id: int | None) -> Response:
        items = self._body_list(req)
        if one_id is not None:
            items = [{**items[0], "id": one_id}]
        if len(items) > 50:
            raise ApiError(400, "Too many entities in one request (max 50)")
        ds, et = self.dataset, SINGULAR[plural]
        rows = ds.by_id(plural)
        fmap = {f["id"]: f for f in self._predefined(et) + ds.fields[et]}
        by_code = {f["code"]: f for f in fmap.values() if f["code"]}
        errors, changes = [], []
        for i, item in enumerate(items):
            errs, values = [], {}
            rid = item.get("id")
            row = rows.get(rid) if isinstance(rid, int) else None
            if row is None or row["is_deleted"]:
                errs.append(_err("NotFound", "id", "Entity not found"))
            for moment in ("created_at", "updated_at"):  # documented: a write may date itself
                v = item.get(moment)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                    errs.append(_err("InvalidType", moment, "This value should be of type int."))
            cfv = item.get("custom_fields_values") or []
            if not isinstance(cfv, list):
                errs.append(
                    _err("InvalidType", "custom_fields_values", "This value should be of type array.")
                )
                cfv = []
            for j, cf in enumerate(cfv):
                path = f"custom_fields_values.{j}"
                f = (
                    fmap.get(cf.get("field_id")) or by_code.get(cf.get("field_code"))
                    if isinstance(cf, dict)
                    else None
                )
                if f is None:
                    errs.append(
                        _err(
                            "NotSupportedChoice",
                            f"{path}.field_id",
                            "The value you selected is not a valid choice.",
                        )
                    )
                    continue
                ok, value = _parse_value(f, cf.get("values"))
                if not ok:
                    errs.append(_err("InvalidType", f"{path}.values.0.value", value))
                else:
                    values[f["id"]] = value
            if errs:
                errors.append({"request_id": str(i), "errors": errs})
            else:
                changes.append((i, rid, values))
        if errors:  # amoCRM rejects the whole batch
            return _validation(errors)
        with ds.lock:
            customs = {}
            for _, rid, values in changes:
                row = rows[rid]
                for special, key in ((PHONE_FIELD, "phone"), (EMAIL_FIELD, "email")):
                    if special in values:
                        row[key] = values.pop(special)
                customs.setdefault(rid, {}).update(values)
            t = ds.write_customs(et, customs)
            for i, rid, _ in changes:
                dated = {k: items[i][k] for k in ("created_at", "updated_at") if items[i].get(k) is not None}
                if dated:
                    ds.backdate(plural, rid, **dated)
        out = [
            {
                "id": rid,
                "name": rows[rid]["name"],
                "updated_at": rows[rid]["updated_at"] if items[i].get("updated_at") is not None else t,
                "request_id": str(i),
                "_links": self._self(f"/api/v4/{plural}/{rid}"),
            }
            for i, rid, _ in changes
        ]
        return self._hal({"_links": self._self(req.path), "_embedded": {plural: out}})


def _err(code: str, path: str, detail: str) -> dict:
    return {"code": code, "path": path, "detail": detail}


def _validation(errors: list) -> Response:
    return problem(400, "Bad Request", "Request validation failed", **{"validation-errors": errors})


DATE_TYPES = ("date", "date_time", "birthday")


def _parse_date(raw) -> tuple[bool, object]:
    """A date field's value: Unix seconds (a number or digits) or RFC 3339 text with an offset
    (`2026-11-23T00:00:00+03:00`, as the official library sends it); kept, and read back, as
    Unix seconds. Anything else is refused (a bare `2026-11-23` has no documented meaning)."""
    if isinstance(raw, bool):
        return False, "This value should be of type date."
    if isinstance(raw, (int, float)) or (isinstance(raw, str) and raw.strip().isdigit()):
        return True, int(float(raw))
    try:
        moment = datetime.fromisoformat(str(raw).strip().replace("Z", "+00:00"))
    except ValueError:
        return False, "This value should be of type date."
    if moment.tzinfo is None or "T" not in str(raw):
        return False, "This value should be of type date."
    return True, int(moment.timestamp())


def _parse_value(field: dict, values) -> tuple[bool, object]:
    """(ok, value or None to clear) from a PATCH `values`; (False, detail) when invalid."""
    if values is None:
        return True, None
    if not isinstance(values, list) or not values or not isinstance(values[0], dict):
        return False, "This value should be of type array."
    raw = values[0].get("value")
    if field["type"] == "numeric":
        try:
            x = float(str(raw).strip())
        except ValueError:
            return False, "This value should be of type numeric."
        if x != x or x in (float("inf"), float("-inf")) or isinstance(raw, bool):
            return False, "This value should be of type numeric."
        return True, int(x) if x.is_integer() else x
    if field["type"] in DATE_TYPES:
        return _parse_date(raw)
    if field.get("enums") and field["type"] in ("select", "radiobutton", "multiselect"):
        by_id = {e["id"]: e["value"] for e in field["enums"]}
        if values[0].get("enum_id") in by_id:
            return True, by_id[values[0]["enum_id"]]
        if raw in by_id.values():
            return True, raw
        return False, "The value you selected is not a valid choice."
    if raw is None:
        return False, "This value should not be blank."
    return True, str(raw)
