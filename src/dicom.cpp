/*
 * dicom.cpp — DICOM series directories through GDCM: a thin C++ shim behind the C function
 * ls_volume_read_dicom (livseg.h). No exception crosses into C.
 *
 * Contract
 *  - Every regular file of the directory (not recursive) is tried. Files without the "DICM" magic that
 *    GDCM cannot read are ignored (READMEs, DICOMDIR indexes); a file with the magic that cannot be
 *    decoded is an error naming it. Files without pixel data are ignored.
 *  - The images must form one series: one SeriesInstanceUID, one orientation, one size and pixel
 *    spacing, single-frame, one sample per pixel. Anything else is an error that says what differs.
 *  - Slices are sorted by their position along the slice normal (row cosine x column cosine). Duplicate
 *    positions, uneven gaps (> 1% of the mean gap, + 1 um) and gantry tilt (slices offset across the
 *    normal) are errors, never silently resampled.
 *  - Voxels are RescaleSlope * stored + RescaleIntercept (HU for CT), per slice.
 *  - GDCM runs in a forked child process that streams the volume back through a pipe: GDCM aborts on
 *    some malformed files (assertions in its parser), and a truncated slice from an interrupted
 *    transfer must be an error naming the file, not a dead workstation process.
 *  - Geometry: voxel axis 0 runs along the row cosine (column index), axis 1 along the column cosine,
 *    axis 2 along the normal in sorted order. DICOM's LPS+ affine is turned into NIfTI's RAS+ by
 *    negating its x and y rows, so the volume carries the affine a NIfTI converter would write.
 */
#include <gdcmImage.h>
#include <gdcmImageReader.h>
#include <gdcmPixelFormat.h>
#include <gdcmStringFilter.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <signal.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern "C" {
#include "util.h"
}

namespace {

struct slice {
    std::string path;
    std::string series;
    std::string modality;
    unsigned cols = 0, rows = 0;
    double spacing[2] = {0, 0}; /* along a row (between columns), along a column (between rows) */
    double thickness = 0;
    double ipp[3] = {0, 0, 0};
    double iop[6] = {0, 0, 0, 0, 0, 0};
    double slope = 1, intercept = 0;
    double key = 0; /* position along the normal */
    gdcm::PixelFormat::ScalarType type = gdcm::PixelFormat::UNKNOWN;
    std::vector<char> pixels;
};

bool has_dicm_magic(const std::string &path) {
    FILE *f = fopen(path.c_str(), "rb");
    if (!f) return false;
    char buf[132];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n == sizeof buf && memcmp(buf + 128, "DICM", 4) == 0;
}

std::string tag_string(const gdcm::File &file, uint16_t group, uint16_t element) {
    gdcm::StringFilter sf;
    sf.SetFile(file);
    std::string s = sf.ToString(gdcm::Tag(group, element));
    while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
    return s;
}

double tag_double(const gdcm::File &file, uint16_t group, uint16_t element, double fallback) {
    std::string s = tag_string(file, group, element);
    char *end = nullptr;
    double v = s.empty() ? fallback : strtod(s.c_str(), &end);
    return (end && end != s.c_str() && std::isfinite(v)) ? v : fallback;
}

bool ls_dtype_of(gdcm::PixelFormat::ScalarType t, ls_dtype *out) {
    switch (t) {
    case gdcm::PixelFormat::UINT8: *out = LS_DT_U8; return true;
    case gdcm::PixelFormat::INT8: *out = LS_DT_I8; return true;
    case gdcm::PixelFormat::UINT16: *out = LS_DT_U16; return true;
    case gdcm::PixelFormat::INT16: *out = LS_DT_I16; return true;
    case gdcm::PixelFormat::UINT32: *out = LS_DT_U32; return true;
    case gdcm::PixelFormat::INT32: *out = LS_DT_I32; return true;
    case gdcm::PixelFormat::FLOAT32: *out = LS_DT_F32; return true;
    case gdcm::PixelFormat::FLOAT64: *out = LS_DT_F64; return true;
    default: return false;
    }
}

double stored_value(const char *buf, gdcm::PixelFormat::ScalarType t, size_t i) {
    switch (t) {
    case gdcm::PixelFormat::UINT8: return ((const uint8_t *)buf)[i];
    case gdcm::PixelFormat::INT8: return ((const int8_t *)buf)[i];
    case gdcm::PixelFormat::UINT16: { uint16_t v; memcpy(&v, buf + 2 * i, 2); return v; }
    case gdcm::PixelFormat::INT16: { int16_t v; memcpy(&v, buf + 2 * i, 2); return v; }
    case gdcm::PixelFormat::UINT32: { uint32_t v; memcpy(&v, buf + 4 * i, 4); return v; }
    case gdcm::PixelFormat::INT32: { int32_t v; memcpy(&v, buf + 4 * i, 4); return v; }
    case gdcm::PixelFormat::FLOAT32: { float v; memcpy(&v, buf + 4 * i, 4); return v; }
    case gdcm::PixelFormat::FLOAT64: { double v; memcpy(&v, buf + 8 * i, 8); return v; }
    default: return NAN;
    }
}

/* 0: not an image (skip); 1: slice read; <0: error already in err. */
int read_slice(const std::string &path, slice &s, ls_error *err) {
    bool magic = has_dicm_magic(path);
    gdcm::ImageReader reader;
    reader.SetFileName(path.c_str());
    if (!reader.Read()) {
        if (!magic) return 0;
        ls_fail(err, LS_ERR_INPUT, "%s: DICOM file cannot be decoded (truncated or corrupt)", path.c_str());
        return -1;
    }
    const gdcm::File &file = reader.GetFile();
    if (!file.GetDataSet().FindDataElement(gdcm::Tag(0x7fe0, 0x0010))) return 0;
    const gdcm::Image &img = reader.GetImage();
    s.path = path;
    s.series = tag_string(file, 0x0020, 0x000e);
    s.modality = tag_string(file, 0x0008, 0x0060);
    if (img.GetNumberOfDimensions() != 2 && img.GetDimension(2) > 1) {
        ls_fail(err, LS_ERR_INPUT, "%s: multi-frame DICOM (%u frames) is not supported", path.c_str(), img.GetDimension(2));
        return -1;
    }
    const gdcm::PixelFormat &pf = img.GetPixelFormat();
    if (pf.GetSamplesPerPixel() != 1) {
        ls_fail(err, LS_ERR_INPUT, "%s: %u samples per pixel (colour); livseg needs greyscale", path.c_str(),
                (unsigned)pf.GetSamplesPerPixel());
        return -1;
    }
    ls_dtype dt;
    if (!ls_dtype_of(pf.GetScalarType(), &dt)) {
        ls_fail(err, LS_ERR_INPUT, "%s: unsupported pixel format %s", path.c_str(), pf.GetScalarTypeAsString());
        return -1;
    }
    s.type = pf.GetScalarType();
    s.cols = img.GetDimension(0);
    s.rows = img.GetDimension(1);
    if (s.cols == 0 || s.rows == 0 || s.cols > 4096 || s.rows > 4096) {
        ls_fail(err, LS_ERR_INPUT, "%s: image size %ux%u outside 1..4096", path.c_str(), s.cols, s.rows);
        return -1;
    }
    for (int i = 0; i < 2; i++) s.spacing[i] = img.GetSpacing(i);
    for (int i = 0; i < 3; i++) s.ipp[i] = img.GetOrigin(i);
    for (int i = 0; i < 6; i++) s.iop[i] = img.GetDirectionCosines(i);
    s.thickness = tag_double(file, 0x0018, 0x0088, tag_double(file, 0x0018, 0x0050, 0));
    s.slope = img.GetSlope();
    s.intercept = img.GetIntercept();
    size_t len = img.GetBufferLength();
    size_t need = (size_t)s.cols * s.rows * pf.GetPixelSize();
    if (len < need) {
        ls_fail(err, LS_ERR_INPUT, "%s: pixel data holds %zu bytes, %zu needed", path.c_str(), len, need);
        return -1;
    }
    s.pixels.resize(len);
    if (!img.GetBuffer(s.pixels.data())) {
        ls_fail(err, LS_ERR_INPUT, "%s: pixel data cannot be decoded", path.c_str());
        return -1;
    }
    return 1;
}

double dot3(const double *a, const double *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

void cross3(const double *a, const double *b, double *c) {
    c[0] = a[1] * b[2] - a[2] * b[1];
    c[1] = a[2] * b[0] - a[0] * b[2];
    c[2] = a[0] * b[1] - a[1] * b[0];
}

/* Every slice must match the first in series, size, spacing and orientation. */
ls_status check_one_series(const char *dir, const std::vector<slice> &v, ls_error *err) {
    const slice &a = v[0];
    std::vector<std::string> uids;
    for (const slice &s : v)
        if (std::find(uids.begin(), uids.end(), s.series) == uids.end()) uids.push_back(s.series);
    if (uids.size() > 1)
        return ls_fail(err, LS_ERR_INPUT, "%s: holds %zu different series (SeriesInstanceUID); put one series per directory",
                       dir, uids.size());
    double n1 = sqrt(dot3(a.iop, a.iop)), n2 = sqrt(dot3(a.iop + 3, a.iop + 3));
    if (fabs(n1 - 1) > 1e-3 || fabs(n2 - 1) > 1e-3 || fabs(dot3(a.iop, a.iop + 3)) > 1e-3)
        return ls_fail(err, LS_ERR_INPUT, "%s: ImageOrientationPatient is not two orthonormal vectors", a.path.c_str());
    for (const slice &s : v) {
        if (s.cols != a.cols || s.rows != a.rows)
            return ls_fail(err, LS_ERR_INPUT, "%s: slices differ in size (%ux%u in %s, %ux%u in %s)", dir, a.cols, a.rows,
                           a.path.c_str(), s.cols, s.rows, s.path.c_str());
        if (s.type != a.type)
            return ls_fail(err, LS_ERR_INPUT, "%s: slices differ in pixel format (%s)", dir, s.path.c_str());
        for (int i = 0; i < 2; i++)
            if (fabs(s.spacing[i] - a.spacing[i]) > 1e-4 * a.spacing[i])
                return ls_fail(err, LS_ERR_INPUT, "%s: slices differ in pixel spacing (%s)", dir, s.path.c_str());
        for (int i = 0; i < 6; i++)
            if (fabs(s.iop[i] - a.iop[i]) > 1e-4)
                return ls_fail(err, LS_ERR_INPUT, "%s: slices differ in orientation (%s)", dir, s.path.c_str());
    }
    if (!(a.spacing[0] > 0 && a.spacing[1] > 0))
        return ls_fail(err, LS_ERR_INPUT, "%s: pixel spacing %g x %g is not positive", a.path.c_str(), a.spacing[0], a.spacing[1]);
    return LS_OK;
}

/* Sorts along the normal and checks the stack is regular; returns the slice step vector (LPS mm). */
ls_status sort_and_check_spacing(const char *dir, std::vector<slice> &v, double step[3], ls_error *err) {
    double normal[3];
    cross3(v[0].iop, v[0].iop + 3, normal);
    for (slice &s : v) s.key = dot3(s.ipp, normal);
    std::sort(v.begin(), v.end(), [](const slice &a, const slice &b) { return a.key < b.key; });
    size_t n = v.size();
    if (n == 1) {
        double dz = v[0].thickness > 0 ? v[0].thickness : 1.0;
        for (int i = 0; i < 3; i++) step[i] = normal[i] * dz;
        return LS_OK;
    }
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 1; i < n; i++) {
        double g = v[i].key - v[i - 1].key;
        if (g < 1e-4)
            return ls_fail(err, LS_ERR_INPUT, "%s: two slices at the same position (%s and %s)", dir,
                           v[i - 1].path.c_str(), v[i].path.c_str());
        lo = std::min(lo, g), hi = std::max(hi, g);
    }
    double mean = (v[n - 1].key - v[0].key) / (double)(n - 1);
    if (hi - lo > 0.01 * mean + 1e-3)
        return ls_fail(err, LS_ERR_INPUT, "%s: uneven slice spacing (gaps from %.4g to %.4g mm; a slice missing?)", dir, lo, hi);
    double d[3], along = 0;
    for (int i = 0; i < 3; i++) d[i] = v[n - 1].ipp[i] - v[0].ipp[i];
    along = dot3(d, normal);
    double across[3] = {d[0] - along * normal[0], d[1] - along * normal[1], d[2] - along * normal[2]};
    if (sqrt(dot3(across, across)) > 1e-3 * fabs(along) + 1e-3)
        return ls_fail(err, LS_ERR_INPUT, "%s: slices are offset across the slice normal (gantry tilt %.2f degrees); not supported",
                       dir, atan2(sqrt(dot3(across, across)), fabs(along)) * 180 / M_PI);
    for (int i = 0; i < 3; i++) step[i] = d[i] / (double)(n - 1);
    return LS_OK;
}

ls_status assemble(const char *dir, const std::vector<slice> &v, const double step[3], ls_volume *out, ls_error *err) {
    const slice &a = v[0];
    int64_t dim[3] = {a.cols, a.rows, (int64_t)v.size()};
    if (dim[2] > 4096) return ls_fail(err, LS_ERR_INPUT, "%s: %lld slices exceed 4096", dir, (long long)dim[2]);
    double lps[3][4];
    for (int i = 0; i < 3; i++) {
        lps[i][0] = a.iop[i] * a.spacing[0];
        lps[i][1] = a.iop[3 + i] * a.spacing[1];
        lps[i][2] = step[i];
        lps[i][3] = a.ipp[i];
    }
    double ras[4][4] = {{0}};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) ras[i][j] = (i < 2 ? -1 : 1) * lps[i][j];
    ras[3][3] = 1;
    memset(out, 0, sizeof *out);
    ls_geom_from_affine(&out->geom, dim, ras);
    size_t plane = (size_t)dim[0] * dim[1];
    out->data = (float *)ls_calloc(plane * v.size(), sizeof(float), err);
    if (!out->data) return LS_ERR_NOMEM;
    int64_t bad = 0;
    for (size_t k = 0; k < v.size(); k++)
        for (size_t i = 0; i < plane; i++) {
            float f = (float)(stored_value(v[k].pixels.data(), v[k].type, i) * v[k].slope + v[k].intercept);
            bad += !std::isfinite(f);
            out->data[k * plane + i] = f;
        }
    if (bad) {
        ls_volume_free(out);
        return ls_fail(err, LS_ERR_INPUT, "%s: %lld voxels are NaN or infinite", dir, (long long)bad);
    }
    ls_dtype_of(a.type, &out->src_dtype);
    out->scl_slope = 1;
    out->scl_inter = 0;
    snprintf(out->descrip, sizeof out->descrip, "DICOM %s", a.modality.c_str());
    snprintf(out->format, sizeof out->format, "DICOM");
    return LS_OK;
}

/* Shared with the parent: the file the child is parsing, named in the error if GDCM kills it. */
struct progress_page {
    char current[4096];
};

ls_status read_series(const char *dir, ls_volume *out, progress_page *pg, ls_error *err) {
    DIR *dp = opendir(dir);
    if (!dp) return ls_fail(err, LS_ERR_INPUT, "%s: cannot open directory (%s)", dir, strerror(errno));
    std::vector<std::string> files;
    while (struct dirent *de = readdir(dp)) {
        if (de->d_name[0] == '.') continue;
        std::string p = std::string(dir) + "/" + de->d_name;
        struct stat st;
        if (stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) files.push_back(p);
    }
    closedir(dp);
    std::sort(files.begin(), files.end());
    if (files.size() > 4096 * 4)
        return ls_fail(err, LS_ERR_INPUT, "%s: %zu files; too many for one series", dir, files.size());
    std::vector<slice> slices;
    for (const std::string &f : files) {
        if (pg) snprintf(pg->current, sizeof pg->current, "%s", f.c_str());
        slice s;
        int r = read_slice(f, s, err);
        if (r < 0) return err ? err->code : LS_ERR_INPUT;
        if (r > 0) slices.push_back(std::move(s));
    }
    if (pg) pg->current[0] = 0;
    if (slices.empty()) return ls_fail(err, LS_ERR_INPUT, "%s: no DICOM images found", dir);
    LS_TRY(check_one_series(dir, slices, err));
    double step[3];
    LS_TRY(sort_and_check_spacing(dir, slices, step, err));
    return assemble(dir, slices, step, out, err);
}

/* What the child sends before the voxels. */
struct reply {
    ls_status status;
    ls_error err;
    ls_volume vol; /* data pointer meaningless across processes */
};

bool write_all(int fd, const void *buf, size_t n) {
    const char *p = static_cast<const char *>(buf);
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w, n -= (size_t)w;
    }
    return true;
}

bool read_all(int fd, void *buf, size_t n) {
    char *p = static_cast<char *>(buf);
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r, n -= (size_t)r;
    }
    return true;
}

ls_status read_series_guarded(const char *dir, ls_volume *out, ls_error *err) {
    try {
        return read_series(dir, out, nullptr, err);
    } catch (const std::bad_alloc &) {
        ls_volume_free(out);
        return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory reading the series", dir);
    } catch (const std::exception &e) {
        ls_volume_free(out);
        return ls_fail(err, LS_ERR_INPUT, "%s: DICOM reading failed (%s)", dir, e.what());
    } catch (...) {
        ls_volume_free(out);
        return ls_fail(err, LS_ERR_INPUT, "%s: DICOM reading failed", dir);
    }
}

[[noreturn]] void child_main(const char *dir, int fd, progress_page *pg) {
    /* GDCM prints warnings and assertion texts; the parent reports one line of its own. */
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 2);
    reply r;
    memset(&r, 0, sizeof r);
    try {
        r.status = read_series(dir, &r.vol, pg, &r.err);
    } catch (...) {
        r.status = ls_fail(&r.err, LS_ERR_INPUT, "%s: DICOM reading failed", dir);
    }
    float *data = r.vol.data;
    r.vol.data = nullptr;
    bool ok = write_all(fd, &r, sizeof r);
    if (ok && r.status == LS_OK) ok = write_all(fd, data, ls_volume_nvox(&r.vol) * sizeof(float));
    _exit(ok ? 0 : 1);
}

}  // namespace

extern "C" ls_status ls_volume_read_dicom(const char *dir, ls_volume *out, ls_error *err) {
    memset(out, 0, sizeof *out);
    void *shared = mmap(nullptr, sizeof(progress_page), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int fds[2];
    if (shared == MAP_FAILED || pipe(fds) != 0) {
        if (shared != MAP_FAILED) munmap(shared, sizeof(progress_page));
        return read_series_guarded(dir, out, err); /* no isolation available: read in-process */
    }
    progress_page *pg = static_cast<progress_page *>(shared);
    pg->current[0] = 0;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        child_main(dir, fds[1], pg);
    }
    close(fds[1]);
    ls_status st = LS_OK;
    reply r;
    bool got = pid > 0 && read_all(fds[0], &r, sizeof r);
    if (got && r.status == LS_OK) {
        r.vol.data = static_cast<float *>(ls_calloc(ls_volume_nvox(&r.vol), sizeof(float), err));
        if (!r.vol.data) st = LS_ERR_NOMEM;
        else if (!read_all(fds[0], r.vol.data, ls_volume_nvox(&r.vol) * sizeof(float))) got = false;
    }
    close(fds[0]);
    int wst = 0;
    if (pid > 0) waitpid(pid, &wst, 0);
    if (pid < 0) {
        st = ls_fail(err, LS_ERR_IO, "%s: cannot start the DICOM reader process (%s)", dir, strerror(errno));
    } else if (!got) {
        st = ls_fail(err, LS_ERR_INPUT, "%s: the DICOM library failed on %s (%s); the file is probably corrupt or truncated",
                     dir, pg->current[0] ? pg->current : "the series",
                     WIFSIGNALED(wst) ? strsignal(WTERMSIG(wst)) : "no result");
    } else if (r.status != LS_OK) {
        if (err) *err = r.err;
        st = r.status;
    }
    if (st == LS_OK && got) {
        *out = r.vol;
    } else if (got && r.status == LS_OK) {
        free(r.vol.data);
    }
    munmap(shared, sizeof(progress_page));
    return st;
}
