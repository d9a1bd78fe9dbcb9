"""The committed generated modules are exactly what grpcio-tools makes from federation.proto."""

from pathlib import Path

from commonsky.federation import gen


def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    made = gen.generate(tmp_path)
    assert set(made) == set(gen.OUTPUTS)
    for name, data in made.items():
        committed = (gen.PACKAGE / name).read_bytes()
        assert committed == data, f"{name} differs: run python -m commonsky.federation.gen"


def test_service_path_is_tak_servers() -> None:
    from commonsky.federation import federation_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["FederatedChannel"]
    assert service.full_name == "com.atakmap.FederatedChannel"
    streams = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert streams["ClientEventStream"] == (False, True)
    assert streams["ServerEventStream"] == (True, False)
    assert streams["HealthCheck"] == (False, False)
    assert streams["ClientROLStream"] == (False, True)
    assert streams["ServerROLStream"] == (True, False)
    assert streams["ServerFederateGroupsStream"] == (False, True)
    assert streams["ClientFederateGroupsStream"] == (True, False)
