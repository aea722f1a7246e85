"""The AWS JSON protocol and authentication, over real HTTP against a running server."""

from __future__ import annotations

import datetime as dt

import httpx

from tests.api.signing import TARGET, send, signed_request


def call(srv, operation, body=None, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("access_key", srv.access_key)
    kw.setdefault("secret_key", srv.secret_key)
    return send(signed_request(srv.endpoint, operation, body if body is not None else {}, **kw))


def error(resp: httpx.Response) -> tuple[int, str, str]:
    doc = resp.json()
    return resp.status_code, doc["__type"], doc["message"]


def test_signed_request_succeeds(dockyard_server):
    r = call(dockyard_server, "ListClusters")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-amz-json-1.1")
    assert "clusterArns" in r.json()
    assert r.headers["x-amzn-requestid"]


def test_missing_signature(dockyard_server):
    r = httpx.post(
        dockyard_server.endpoint + "/",
        content=b"{}",
        headers={"X-Amz-Target": TARGET + "ListClusters", "Content-Type": "application/x-amz-json-1.1"},
    )
    assert error(r)[:2] == (403, "MissingAuthenticationTokenException")


def test_unknown_access_key(dockyard_server):
    r = call(dockyard_server, "ListClusters", access_key="AKIDUNKNOWN000000000", secret_key="x")
    assert error(r)[:2] == (403, "UnrecognizedClientException")


def test_wrong_secret(dockyard_server):
    r = call(dockyard_server, "ListClusters", secret_key="not-the-secret")
    assert error(r)[:2] == (403, "InvalidSignatureException")


def test_tampered_body(dockyard_server):
    req = signed_request(
        dockyard_server.endpoint,
        "CreateCluster",
        {"clusterName": "a"},
        access_key=dockyard_server.access_key,
        secret_key=dockyard_server.secret_key,
    )
    tampered = httpx.Request("POST", req.url, headers=req.headers, content=b'{"clusterName":"b"}')
    assert error(send(tampered))[:2] == (403, "InvalidSignatureException")


def test_expired_and_future_timestamps(dockyard_server):
    now = dt.datetime.now(dt.UTC)
    for skew in (dt.timedelta(minutes=-16), dt.timedelta(minutes=16)):
        r = call(dockyard_server, "ListClusters", when=now + skew)
        status, code, message = error(r)
        assert (status, code) == (403, "InvalidSignatureException")
        assert "signature expired" in message.lower() or "signature not yet current" in message.lower()
    # inside the window both ways is fine
    for skew in (dt.timedelta(minutes=-10), dt.timedelta(minutes=10)):
        assert call(dockyard_server, "ListClusters", when=now + skew).status_code == 200


def test_malformed_json(dockyard_server):
    r = call(dockyard_server, "ListClusters", b"{not json")
    assert error(r)[:2] == (400, "SerializationException")
    r = call(dockyard_server, "ListClusters", b"[1, 2]")
    assert error(r)[:2] == (400, "SerializationException")


def test_unknown_and_unimplemented_operations(dockyard_server):
    assert error(call(dockyard_server, "FlyToTheMoon"))[:2] == (400, "UnknownOperationException")
    r = call(dockyard_server, "ListClusters", target="SomethingElse.ListClusters")
    assert error(r)[:2] == (400, "UnknownOperationException")
    status, code, message = error(call(dockyard_server, "ListAccountSettings"))
    assert (status, code) == (400, "UnsupportedFeatureException")
    assert "ListAccountSettings" in message


def test_model_validation_names_the_field(dockyard_server):
    status, code, message = error(call(dockyard_server, "ListClusters", {"maxResults": "ten"}))
    assert (status, code) == (400, "InvalidParameterException")
    assert "maxResults" in message
    status, code, message = error(
        call(dockyard_server, "DescribeClusters", {"clusters": ["x"], "include": ["NOPE"]})
    )
    assert code == "InvalidParameterException" and "include" in message


def test_unknown_members_are_ignored(dockyard_server):
    r = call(dockyard_server, "ListClusters", {"someFutureMember": {"x": 1}})
    assert r.status_code == 200, r.text


def test_other_paths_and_methods_answer_aws_json_errors(dockyard_server):
    for method, path in (("GET", "/"), ("POST", "/nope")):
        r = httpx.request(method, dockyard_server.endpoint + path)
        assert r.status_code == 400
        assert r.json()["__type"] == "UnknownOperationException"
