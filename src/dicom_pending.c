/* dicom_pending.c — placeholder until the GDCM reader (src/dicom.cpp) lands; removed then. */
#include "util.h"

ls_status ls_volume_read_dicom(const char *dir, ls_volume *out, ls_error *err) {
    (void)out;
    return ls_fail(err, LS_ERR_UNSUPPORTED, "%s: DICOM reading is not built yet", dir);
}
