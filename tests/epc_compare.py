"""Compare recombined models by content: parts by (type, title), faces per connection set."""
from __future__ import annotations

from collections import Counter

import resqpy.model as rq


def content(epc) -> dict:
    model = rq.Model(str(epc), quiet=True)
    parts = Counter()
    faces = {}
    for part in model.parts():
        obj_type = model.type_of_part(part, strip_obj=True)
        title = model.citation_title_for_part(part)
        parts[(obj_type, title)] += 1
        if obj_type == "GridConnectionSetRepresentation":
            import resqpy.fault as rqf
            gcs = rqf.GridConnectionSet(model, uuid=model.uuid_for_part(part))
            faces[title] = int(gcs.count)
    model.h5_release()
    return {"parts": parts, "faces": faces}


def resqpy_reference(batch_file, out_epc, tmp_dir) -> list[bool]:
    """resqpy's own function_multiprocessing, in-process, on the same batch."""
    import resqpy.multi_processing as rqmp
    from resqmp.batch import load
    batch = load(batch_file)
    kwargs_list = [dict(k) for k in batch.tasks]
    return rqmp.function_multiprocessing(batch.function, kwargs_list, str(out_epc), cluster=None,
                                         tmp_dir_path=str(tmp_dir))
