"""Decodes OTLP profiles requests (gzip ExportProfilesServiceRequest bodies, as forkprof's OTLP
exporter posts them) with the reference bindings (PyPI opentelemetry-proto), checks what the
format itself requires, and prints each request resolved to plain values as one JSON object,
for tests/export_otlp.rs to compare with what it recorded.

Usage: otlp_decode.py BODY...   (exit status 0; any violation raises)
"""

import gzip
import json
import sys

from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2

# The layout forkprof writes (opentelemetry-proto 1.10.0). Bindings of another release may
# reuse these names with other numbers: refuse them rather than decode garbage.
EXPECTED_FIELDS = {
    profiles_pb2.Profile: {"sample_type": 1, "samples": 2, "time_unix_nano": 3, "duration_nano": 4,
                           "period_type": 5, "period": 6},
    profiles_pb2.Sample: {"stack_index": 1, "attribute_indices": 2, "link_index": 3, "values": 4,
                          "timestamps_unix_nano": 5},
    profiles_pb2.ProfilesDictionary: {"mapping_table": 1, "location_table": 2, "function_table": 3,
                                      "link_table": 4, "string_table": 5, "attribute_table": 6,
                                      "stack_table": 7},
}
for message, fields in EXPECTED_FIELDS.items():
    got = {f.name: f.number for f in message.DESCRIPTOR.fields if f.name in fields}
    assert got == fields, f"bindings of another proto version: {message.DESCRIPTOR.name} {got}"
assert not profiles_pb2.Profile.DESCRIPTOR.fields_by_name["sample_type"].is_repeated, "one sample type per Profile"


def any_value(v):
    kind = v.WhichOneof("value")
    assert kind in ("string_value", "int_value"), f"unexpected AnyValue {kind}"
    return getattr(v, kind)


def decode(path):
    with open(path, "rb") as f:
        body = f.read()
    assert body[:2] == b"\x1f\x8b", "body is not gzip"
    req = profiles_service_pb2.ExportProfilesServiceRequest()
    req.ParseFromString(gzip.decompress(body))
    d = req.dictionary
    strings = list(d.string_table)
    # Every table's first entry is its zero value, as the format requires.
    assert strings[0] == ""
    for table in ("mapping_table", "location_table", "function_table", "link_table",
                  "attribute_table", "stack_table"):
        entries = getattr(d, table)
        assert len(entries) >= 1, f"{table} has no zero entry"
        assert entries[0].ByteSize() == 0, f"{table}[0] is not the zero value"
    # Dictionaries are deduplicated.
    for table in ("link_table", "attribute_table", "stack_table"):
        seen = [e.SerializeToString() for e in getattr(d, table)]
        assert len(seen) == len(set(seen)), f"{table} has duplicates"
    assert len(set(strings)) == len(strings), "string_table has duplicates"

    def frame(loc_index):
        loc = d.location_table[loc_index]
        assert loc_index > 0 and len(loc.lines) == 1, f"location {loc_index}"
        line = loc.lines[0]
        fn = d.function_table[line.function_index]
        assert line.function_index > 0
        assert fn.system_name_strindex == fn.name_strindex
        return f"{strings[fn.name_strindex]}@{strings[fn.filename_strindex]}:{line.line}"

    def attribute(i):
        a = d.attribute_table[i]
        assert i > 0
        value = any_value(a.value)
        unit = strings[a.unit_strindex]
        return strings[a.key_strindex], (f"{value} {unit}" if unit else value)

    assert len(req.resource_profiles) == 1, "one resource per request"
    rp = req.resource_profiles[0]
    resource = {}
    for kv in rp.resource.attributes:
        assert kv.key not in resource, f"resource key {kv.key} twice"
        resource[kv.key] = any_value(kv.value)
    assert len(rp.scope_profiles) == 1, "one scope"
    sp = rp.scope_profiles[0]
    profiles = []
    for p in sp.profiles:
        samples = []
        for s in p.samples:
            assert s.stack_index > 0
            stack = [frame(i) for i in d.stack_table[s.stack_index].location_indices]
            attrs = dict(attribute(i) for i in s.attribute_indices)
            assert len(attrs) == len(s.attribute_indices), "sample attribute keys repeat"
            link = None
            if s.link_index:
                l = d.link_table[s.link_index]
                assert len(l.trace_id) == 16 and len(l.span_id) == 8
                link = [l.trace_id.hex(), l.span_id.hex()]
            assert len(s.values) == 1
            assert len(s.timestamps_unix_nano) in (0, 1)
            samples.append({
                "stack": stack,
                "attrs": attrs,
                "link": link,
                "value": s.values[0],
                "timestamp": s.timestamps_unix_nano[0] if s.timestamps_unix_nano else None,
            })
        profiles.append({
            "type": strings[p.sample_type.type_strindex],
            "unit": strings[p.sample_type.unit_strindex],
            "time_unix_nano": p.time_unix_nano,
            "duration_nano": p.duration_nano,
            "period_type": [strings[p.period_type.type_strindex],
                            strings[p.period_type.unit_strindex]] if p.HasField("period_type") else None,
            "period": p.period,
            "samples": samples,
        })
    return {
        "resource": resource,
        "scope": {"name": sp.scope.name, "version": sp.scope.version},
        "profiles": profiles,
    }


if __name__ == "__main__":
    print(json.dumps([decode(p) for p in sys.argv[1:]]))
