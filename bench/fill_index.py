#!/usr/bin/env python3
"""Prints SQL that fills an empty index with synthetic studies, set-based (seconds, not hours).

usage: fill_index.py sqlite|postgres STUDIES SERIES_PER_STUDY INSTANCES_PER_SERIES

The rows look like what ingest writes (patient names, dates over ten years, CT/MR/CR series,
a small DICOM JSON metadata document per instance); their objects do not exist, so only the
index (QIDO-RS, metadata) can be exercised on them. Run it on a freshly migrated, empty index.
"""
import sys

dialect, studies, series_per, per_series = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n_series = studies * series_per
n_instances = n_series * per_series
pg = dialect == "postgres"


def rows(n):
    if pg:
        return f"generate_series(1, {n}) AS g(x)"
    return f"(WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {n}) SELECT x FROM s) AS g"


def date(expr, base="2015-01-01"):
    if pg:
        return f"to_char(DATE '{base}' + ({expr})::int, 'YYYYMMDD')"
    return f"strftime('%Y%m%d', '{base}', '+' || ({expr}) || ' days')"


def blob(text):
    return f"convert_to({text}, 'UTF8')" if pg else f"CAST({text} AS BLOB)"


def idiv(a, b):
    return f"(({a}) / {b})"


names = "(ARRAY['SMITH','JOHNSON','GARCIA','MARTIN','MULLER','ROSSI','DUBOIS','NOVAK','TANAKA','SILVA'])" if pg else None


def family(x):
    if pg:
        return f"{names}[1 + ({x}) % 10]"
    return (f"CASE ({x}) % 10 WHEN 0 THEN 'SMITH' WHEN 1 THEN 'JOHNSON' WHEN 2 THEN 'GARCIA' WHEN 3 THEN 'MARTIN' "
            f"WHEN 4 THEN 'MULLER' WHEN 5 THEN 'ROSSI' WHEN 6 THEN 'DUBOIS' WHEN 7 THEN 'NOVAK' WHEN 8 THEN 'TANAKA' ELSE 'SILVA' END")


def modality(x):
    return f"CASE ({x}) % 3 WHEN 0 THEN 'CT' WHEN 1 THEN 'MR' ELSE 'CR' END"


print("BEGIN;")
print(f"""INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name, patient_name_norm, patient_birth_date, patient_sex)
SELECT 'BENCH' || x, '', {family('x')} || '^GIVEN' || (x % 97), {family('x')} || '^GIVEN' || (x % 97), {date('x % 20000', '1940-01-01')}, CASE WHEN x % 2 = 0 THEN 'F' ELSE 'M' END
FROM {rows(studies)};""")
print(f"""INSERT INTO studies (patient_pk, study_instance_uid, study_date, study_time, accession_number,
  referring_physician_name, study_description, study_id, patient_id, patient_name, patient_name_norm,
  patient_birth_date, patient_sex, created_at_ms)
SELECT p.pk, '2.25.1' || p.pk, {date('p.pk % 3650')}, '0' || (8 + p.pk % 2) || '1500', 'ACC' || p.pk,
  'REFERRER^' || (p.pk % 50), 'BENCH STUDY ' || (p.pk % 20), '' || p.pk, p.patient_id, p.patient_name,
  UPPER(p.patient_name), p.patient_birth_date, p.patient_sex, 0
FROM patients p WHERE p.patient_id LIKE 'BENCH%';""")
print(f"""INSERT INTO series (study_pk, series_instance_uid, modality, series_number, series_description,
  series_date, series_time, body_part_examined, created_at_ms)
SELECT {idiv('x - 1', series_per)} + 1, '2.25.2' || x, {modality(idiv('x - 1', series_per) + ' + 1')},
  1 + (x - 1) % {series_per}, 'BENCH SERIES', '', '', 'CHEST', 0
FROM {rows(n_series)};""")
print(f"""INSERT INTO instances (series_pk, study_pk, sop_instance_uid, sop_class_uid, instance_number,
  transfer_syntax_uid, rows_, columns_, number_of_frames, bits_allocated, object_key, size_bytes,
  sha256, received_at_ms, source_ae)
SELECT {idiv('x - 1', per_series)} + 1, {idiv(idiv('x - 1', per_series), series_per)} + 1, '2.25.3' || x,
  '1.2.840.10008.5.1.4.1.1.2', 1 + (x - 1) % {per_series}, '1.2.840.10008.1.2.1', 512, 512, NULL, 16,
  'bench/' || x || '.dcm', 525000, '0000000000000000000000000000000000000000000000000000000000000000', 0, 'BENCH'
FROM {rows(n_instances)};""")
md = ('{"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080060":{"vr":"CS","Value":["CT"]},'
      '"00180050":{"vr":"DS","Value":[1.25]},"00200037":{"vr":"DS","Value":[1,0,0,0,1,0]},'
      '"00280010":{"vr":"US","Value":[512]},"00280011":{"vr":"US","Value":[512]},'
      '"00280030":{"vr":"DS","Value":[0.703125,0.703125]},"00280100":{"vr":"US","Value":[16]},'
      '"00281050":{"vr":"DS","Value":[40]},"00281051":{"vr":"DS","Value":[400]},'
      '"7FE00010":{"vr":"OW","BulkDataURI":"bulkdata/7FE00010"}}')
print(f"""INSERT INTO instance_metadata (instance_pk, metadata_json, frames_json)
SELECT i.pk, {blob("'" + md + "'")}, '[]' FROM instances i WHERE i.source_ae = 'BENCH';""")
print("COMMIT;")
if pg:
    print("ANALYZE;")
else:
    print("ANALYZE;")
