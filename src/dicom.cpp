/*
 * dicom.cpp — DICOM series directories through GDCM: a thin C++ shim behind the C function
 * ls_volume_read_dicom (livseg.h). No exception crosses into C.
 *
 * Contract
 *  - Every regular file of the directory and its subdirectories (8 levels, links to directories not
 *    followed) is tried, in path order. Files without the "DICM" magic that
 *    GDCM cannot read are ignored (READMEs, DICOMDIR indexes); a file with the magic that cannot be
 *    decoded is an error naming it. Files without pixel data are ignored.
 *  - The images must form one series: one SeriesInstanceUID, one orientation, one size and pixel
 *    spacing, one sample per pixel. Anything else is an error that says what differs. A multi-frame
 *    (enhanced CT/MR) file gives one slice a frame, placed by its Per-frame Functional Groups; frames
 *    of several EffectiveEchoTimes are echoes 1, 2, ... by ascending time.
 *  - A native slice whose pixel data the file cuts short is an error (GDCM would zero-fill it).
 *    In a directory of several series, the images whose SeriesNumber, SeriesDescription or
 *    SeriesInstanceUID is the `series` asked for are read and the others skipped undecoded; without
 *    one, the error lists the series. A series of several echoes (EchoNumbers) is read one echo at a
 *    time, the one `echo` names.
 *  - Slices are sorted by their position along the slice normal (row cosine x column cosine). Duplicate
 *    positions, uneven gaps (> 1% of the mean gap, + 1 um) and gantry tilt (slices offset across the
 *    normal) are errors, never silently resampled.
 *  - Voxels are RescaleSlope * stored + RescaleIntercept (HU for CT), per slice.
 *  - GDCM runs in a forked child process that streams the volume back through a pipe: GDCM aborts on
 *    some malformed files (assertions in its parser), and a truncated slice from an interrupted
 *    transfer must be an error naming the file, not a dead workstation process. ls_dicom_begin forks
 *    it and ls_dicom_end collects the volume (volume.h), so a caller can load a model meanwhile.
 *  - When the first image is compressed, that child forks up to `readers` decoder processes for the
 *    files after it (taken in turn) and takes their slices back in file order: a compressed series
 *    decodes on several cores, while the result, and the error reported first, are those of reading
 *    the files one by one. Processes, not threads: they share nothing, so GDCM's and its codecs' thread
 *    safety is not needed. Uncompressed files are read in the child alone: there copying is the cost.
 *  - Geometry: voxel axis 0 runs along the row cosine (column index), axis 1 along the column cosine,
 *    axis 2 along the normal in sorted order. DICOM's LPS+ affine is turned into NIfTI's RAS+ by
 *    negating its x and y rows, so the volume carries the affine a NIfTI converter would write.
 */
/* GDCM's headers trip clang's -Wdeprecated-copy family (the fuzz build); not ours to fix. */
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wdeprecated-copy"
#pragma clang diagnostic ignored "-Wdeprecated-copy-with-user-provided-copy"
#endif
#include <gdcmImage.h>
#include <gdcmImageReader.h>
#include <gdcmPixelFormat.h>
#include <gdcmReader.h>
#include <gdcmStringFilter.h>
#if defined(__clang__)
#pragma clang diagnostic pop
#endif

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <poll.h>
#include <signal.h>
#include <string>
#include <type_traits>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern "C" {
#include "util.h"
#include "volume.h"
}

namespace {

/* A slice's numbers: plain data, sent from a decoder process as bytes. */
struct slice_info {
    unsigned cols = 0, rows = 0;
    double spacing[2] = {0, 0}; /* along a row (between columns), along a column (between rows) */
    double thickness = 0;
    double ipp[3] = {0, 0, 0};
    double iop[6] = {0, 0, 0, 0, 0, 0};
    double slope = 1, intercept = 0;
    double key = 0; /* position along the normal */
    int echo = 0;           /* EchoNumbers: 1, 2, ... in a multi-echo series; 0 when absent */
    double echo_time = 0;   /* EchoTime, ms */
    gdcm::PixelFormat::ScalarType type = gdcm::PixelFormat::UNKNOWN;
    bool compressed = false; /* an encapsulated transfer syntax (JPEG, JPEG 2000, RLE, ...) */
    unsigned frames = 1;     /* NumberOfFrames */
};

struct slice : slice_info {
    std::string path;
    std::vector<std::pair<int, double>> frame_echoes; /* a multi-frame file's echoes (number, ms), if several */
    std::string series;      /* SeriesInstanceUID */
    std::string number;      /* SeriesNumber */
    std::string description; /* SeriesDescription */
    std::string modality;
    std::vector<char> pixels;
};

/* The outcomes of read_slice. An unusable image (colour, ...) is not an error at once: in a directory
 * that turns out to hold several series (a study exported whole, a dose report beside the CT), the
 * list of series is what the user needs to hear. */
enum {
    SLICE_ERROR = -1,      /* a file that cannot be read: an error (err), reading stops */
    SLICE_UNUSABLE = -2,   /* an image livseg cannot use (err); its series fields are set */
    SLICE_NONE = 0,        /* not an image: skipped */
    SLICE_READ = 1,        /* a slice of the wanted series, pixels and all */
    SLICE_OTHER = 2,       /* an image of another series than the one asked for: its series fields only */
    SLICE_MULTIFRAME = 3,  /* a wanted multi-frame file, not decoded: a decoder process leaves it to the
                            * reader child (one file, many slices); series fields set */
    SLICE_FRAMES = 4,      /* a wanted multi-frame file read as one slice per frame (into `frames`) */
};

/* A file is DICOM-like when it carries the Part 10 "DICM" magic, or its preamble is followed by a
 * file-meta tag (group 0002: the magic itself got damaged), or it starts with a group 0002/0008 tag
 * (a raw dataset without preamble). Such a file that GDCM cannot read is an error, never skipped:
 * dropping a damaged slice silently would hand back a series with a hole in it. Text files (READMEs)
 * and other formats fail all three tests. */
bool looks_like_dicom(const std::string &path) {
    FILE *f = fopen(path.c_str(), "rb");
    if (!f) return false;
    unsigned char buf[134];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (n >= 132 && memcmp(buf + 128, "DICM", 4) == 0) return true;
    if (n >= 134 && buf[132] == 0x02 && buf[133] == 0x00) return true;
    return n >= 8 && (buf[0] == 0x02 || buf[0] == 0x08) && buf[1] == 0x00 && buf[3] == 0x00;
}

std::string tag_string(const gdcm::File &file, uint16_t group, uint16_t element) {
    gdcm::StringFilter sf;
    sf.SetFile(file);
    std::string s = sf.ToString(gdcm::Tag(group, element));
    while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
    size_t lead = s.find_first_not_of(' ');
    return lead == std::string::npos ? std::string() : s.substr(lead);
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

/* Private data memory of this process (VmData, bytes); 0 when /proc cannot say. */
size_t data_bytes_now() {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmData: %llu kB", &kb) == 1) break;
    fclose(f);
    return (size_t)kb * 1024;
}

/* GDCM trusts 32-bit element lengths: a 463-byte file declaring a 4 GB value makes it allocate and
 * zero-fill 4 GB (measured: 4.2 GB RSS, 8 s) before it notices the file is short. Around one header
 * parse, the child caps new private memory at what it holds now plus a budget no honest header needs;
 * the refusal surfaces as std::bad_alloc. The cap is relative to VmData so sanitizer builds, whose
 * shadow mappings count there, still work; it is only ever set in the forked child (process-wide). */
class data_cap {
  public:
    explicit data_cap(bool on, size_t budget) {
        size_t now = on ? data_bytes_now() : 0;
        if (!now || getrlimit(RLIMIT_DATA, &old_) != 0) return;
        struct rlimit lim = old_;
        rlim_t want = (rlim_t)(now + budget);
        if (old_.rlim_cur != RLIM_INFINITY && old_.rlim_cur <= want) return;
        lim.rlim_cur = want;
        set_ = setrlimit(RLIMIT_DATA, &lim) == 0;
    }
    ~data_cap() {
        if (set_) setrlimit(RLIMIT_DATA, &old_);
    }
    data_cap(const data_cap &) = delete;
    data_cap &operator=(const data_cap &) = delete;

  private:
    struct rlimit old_ = {};
    bool set_ = false;
};

/* The header parse of one file under a data_cap: 1 read, 0 GDCM refused it, -1 over the budget.
 * `upto_pixels`: stop before the pixel data (a listing needs only the header). */
int read_header_capped(gdcm::Reader &reader, const std::string &path, bool cap, bool upto_pixels = false) {
    struct stat st;
    size_t file_bytes = stat(path.c_str(), &st) == 0 ? (size_t)st.st_size : 0;
    data_cap guard(cap, 4 * file_bytes + ((size_t)256 << 20));
    try {
        return (upto_pixels ? reader.ReadUpToTag(gdcm::Tag(0x7fe0, 0x0010)) : reader.Read()) ? 1 : 0;
    } catch (const std::bad_alloc &) {
        return -1;
    }
}

/* `want` names a series when it is its SeriesInstanceUID, SeriesNumber or SeriesDescription. */
bool names_series(const std::string &want, const std::string &uid, const std::string &number, const std::string &description) {
    return want == uid || want == number || want == description;
}

/* Which images to read (ls_dicom_pick, as C++): a series' name, empty for the only one; an echo number,
 * 0 for the only one. `list`: none, the series are listed (ls_dicom_list). */
struct pick {
    std::string series;
    int echo = 0;
    bool list = false;
};

/* A slice is among the images `want` picks. `multi_frame`: its echo is picked frame by frame. */
bool picked(const slice &s, const pick &want, bool multi_frame = false) {
    return !want.list && (want.series.empty() || names_series(want.series, s.series, s.number, s.description)) &&
           (!want.echo || multi_frame || s.echo == want.echo);
}

/* How many bytes of a native (uncompressed) pixel data element of value length `vl` are missing from the
 * end of the file. GDCM reads an element cut short by the end of the file without an error (it warns
 * "Incomplete Pixel Data found, use file at own risk" and zero-fills), so an interrupted copy would
 * pass for a slice. The element's header is found in the file: tag (7fe0,0010), either byte order,
 * then `vl` as its length (implicit VR) or a VR and `vl` (explicit). 0 when the value fits in the file
 * or no such header is found (a deflated data set cannot be scanned; GDCM's own checks stand there). */
long long pixel_data_shortfall(const std::string &path, uint32_t vl) {
    int fd = open(path.c_str(), O_RDONLY);
    struct stat st;
    if (fd < 0) return 0;
    if (fstat(fd, &st) != 0 || st.st_size < 12) return close(fd), 0;
    size_t n = (size_t)st.st_size;
    void *map = mmap(nullptr, n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return 0;
    const unsigned char *b = static_cast<const unsigned char *>(map);
    auto le32 = [&](size_t i) { return (uint32_t)b[i] | (uint32_t)b[i + 1] << 8 | (uint32_t)b[i + 2] << 16 | (uint32_t)b[i + 3] << 24; };
    auto be32 = [&](size_t i) { return (uint32_t)b[i + 3] | (uint32_t)b[i + 2] << 8 | (uint32_t)b[i + 1] << 16 | (uint32_t)b[i] << 24; };
    long long short_by = 0;
    for (size_t p = 0; p + 8 <= n; p++) {
        bool le = b[p] == 0xe0 && b[p + 1] == 0x7f && b[p + 2] == 0x10 && b[p + 3] == 0x00;
        bool be = b[p] == 0x7f && b[p + 1] == 0xe0 && b[p + 2] == 0x00 && b[p + 3] == 0x10;
        if (!le && !be) continue;
        size_t head = 0;
        if ((le ? le32(p + 4) : be32(p + 4)) == vl) head = 8;
        else if (p + 12 <= n && isupper(b[p + 4]) && isupper(b[p + 5]) && (le ? le32(p + 8) : be32(p + 8)) == vl) head = 12;
        if (!head) continue;
        short_by = std::max(0LL, (long long)(p + head) + (long long)vl - (long long)n);
        break;
    }
    munmap(map, n);
    return short_by;
}

/* The numbers of a decimal-string (DS) element of `ds` ("1\\0\\0\\0\\1\\0"); none when it is absent or empty. */
std::vector<double> ds_values(const gdcm::DataSet &ds, uint16_t group, uint16_t element) {
    std::vector<double> out;
    const gdcm::Tag tag(group, element);
    const gdcm::ByteValue *bv = ds.FindDataElement(tag) ? ds.GetDataElement(tag).GetByteValue() : nullptr;
    if (!bv) return out;
    std::string text(bv->GetPointer(), bv->GetLength());
    const char *p = text.c_str();
    for (;;) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !std::isfinite(v)) break;
        out.push_back(v);
        p = end + strspn(end, " ");
        if (*p++ != '\\') break;
    }
    return out;
}

/* A functional group of an enhanced (multi-frame) image: the first item of sequence (sg, se) in the
 * frame's own groups (`frame`, may be null), else in the shared ones (`shared`, may be null), handed to
 * `take` until it returns true (it found what it wanted there). True when it did. */
template <class F>
bool in_group(const gdcm::DataSet *frame, const gdcm::DataSet *shared, uint16_t sg, uint16_t se, F &&take) {
    for (const gdcm::DataSet *ds : {frame, shared}) {
        const gdcm::Tag tag(sg, se);
        if (!ds || !ds->FindDataElement(tag)) continue;
        gdcm::SmartPointer<gdcm::SequenceOfItems> sq = ds->GetDataElement(tag).GetValueAsSQ();
        if (sq && sq->GetNumberOfItems() >= 1 && take(sq->GetItem(1).GetNestedDataSet())) return true;
    }
    return false;
}

/* A DS attribute (group, element) of a functional group (in_group); none when neither has it. */
std::vector<double> group_values(const gdcm::DataSet *frame, const gdcm::DataSet *shared, uint16_t sg, uint16_t se,
                                 uint16_t group, uint16_t element) {
    std::vector<double> v;
    in_group(frame, shared, sg, se, [&](const gdcm::DataSet &item) { return !(v = ds_values(item, group, element)).empty(); });
    return v;
}

/* An enhanced image's functional groups: the shared ones (Shared Functional Groups Sequence, one item)
 * and each frame's own (Per-frame Functional Groups Sequence, an item a frame). */
class functional_groups {
  public:
    explicit functional_groups(const gdcm::DataSet &ds) {
        const gdcm::Tag shared_tag(0x5200, 0x9229), per_frame_tag(0x5200, 0x9230);
        if (ds.FindDataElement(shared_tag)) shared_sq_ = ds.GetDataElement(shared_tag).GetValueAsSQ();
        if (ds.FindDataElement(per_frame_tag)) per_frame_ = ds.GetDataElement(per_frame_tag).GetValueAsSQ();
    }
    /* One per-frame item for each of `nframes` frames. */
    bool per_frame(unsigned nframes) const { return per_frame_ && per_frame_->GetNumberOfItems() == nframes; }
    const gdcm::DataSet *shared() const {
        return shared_sq_ && shared_sq_->GetNumberOfItems() >= 1 ? &shared_sq_->GetItem(1).GetNestedDataSet() : nullptr;
    }
    const gdcm::DataSet *frame(unsigned k) const { return &per_frame_->GetItem(k + 1).GetNestedDataSet(); }

  private:
    gdcm::SmartPointer<gdcm::SequenceOfItems> shared_sq_, per_frame_;
};

/* Each frame's EffectiveEchoTime (MR Echo Sequence, per-frame or shared; an FD, binary), NAN where none.
 * Empty unless the data set has as many per-frame groups as `nframes`. */
std::vector<double> frame_echo_times(const gdcm::DataSet &ds, unsigned nframes) {
    std::vector<double> out;
    const gdcm::Tag te(0x0018, 0x9082);
    functional_groups fg(ds);
    if (!fg.per_frame(nframes)) return out;
    for (unsigned k = 0; k < nframes; k++) {
        double ms = NAN;
        in_group(fg.frame(k), fg.shared(), 0x0018, 0x9114, [&](const gdcm::DataSet &item) {
            if (!item.FindDataElement(te)) return false;
            const gdcm::ByteValue *bv = item.GetDataElement(te).GetByteValue();
            if (bv && bv->GetLength() == 8) memcpy(&ms, bv->GetPointer(), 8); /* little endian: enhanced files are */
            return true;
        });
        out.push_back(std::isfinite(ms) ? ms : NAN);
    }
    return out;
}

/* A multi-frame file whose frames hold several echo times (an enhanced multi-echo MR: in- and
 * opposed-phase in one file) numbers its echoes 1, 2, ... by ascending time, as EchoNumbers would;
 * into each frame's echo, and the file's list into `echoes`. One echo time or none: nothing changes. */
void number_frame_echoes(const std::vector<double> &ms, std::vector<slice> &frames, std::vector<std::pair<int, double>> &echoes) {
    std::vector<double> times;
    for (double t : ms)
        if (std::isfinite(t)) times.push_back(t);
    std::sort(times.begin(), times.end());
    times.erase(std::unique(times.begin(), times.end()), times.end());
    if (times.size() < 2) return;
    for (size_t i = 0; i < times.size(); i++) echoes.push_back({(int)i + 1, times[i]});
    for (size_t k = 0; k < frames.size() && k < ms.size(); k++) {
        auto at = std::lower_bound(times.begin(), times.end(), ms[k]);
        frames[k].echo = std::isfinite(ms[k]) ? (int)(at - times.begin()) + 1 : 0;
        frames[k].echo_time = std::isfinite(ms[k]) ? ms[k] : 0;
    }
}

/* The series fields of a slice: those every outcome but SLICE_ERROR and SLICE_NONE carries. */
void read_series_fields(const gdcm::File &file, slice &s) {
    s.series = tag_string(file, 0x0020, 0x000e);
    s.number = tag_string(file, 0x0020, 0x0011);
    s.description = tag_string(file, 0x0008, 0x103e);
    s.modality = tag_string(file, 0x0008, 0x0060);
    s.echo = (int)tag_double(file, 0x0018, 0x0086, 0);
    s.echo_time = tag_double(file, 0x0018, 0x0081, 0);
}

/* For a listing: a file's header up to its pixel data, SLICE_OTHER for an image (it has Rows), with its
 * series fields and size; the pixels are neither read nor checked. */
int list_slice(const std::string &path, slice &s, bool cap, ls_error *err) {
    gdcm::Reader reader;
    reader.SetFileName(path.c_str());
    int got = read_header_capped(reader, path, cap, true);
    if (got < 0 || (!got && looks_like_dicom(path))) {
        ls_fail(err, LS_ERR_INPUT, "%s: %s", path.c_str(),
                got < 0 ? "DICOM header declares more data than the file holds (corrupt element length)"
                        : "DICOM header cannot be read (truncated or corrupt)");
        return SLICE_ERROR;
    }
    const gdcm::File &file = reader.GetFile();
    if (!got || !file.GetDataSet().FindDataElement(gdcm::Tag(0x0028, 0x0010))) return SLICE_NONE;
    s.path = path;
    read_series_fields(file, s);
    s.rows = (unsigned)tag_double(file, 0x0028, 0x0010, 0);
    s.cols = (unsigned)tag_double(file, 0x0028, 0x0011, 0);
    s.frames = (unsigned)std::min(std::max(tag_double(file, 0x0028, 0x0008, 1), 1.0), 1e9);
    if (s.frames > 1 && s.frames <= 4096) {
        std::vector<slice> none;
        number_frame_echoes(frame_echo_times(file.GetDataSet(), s.frames), none, s.frame_echoes);
    }
    return SLICE_OTHER;
}

/* An enhanced CT/MR file's frames as slices (SLICE_FRAMES), `s` holding what they share and `pixels` all
 * of them: each frame's position, and its orientation, pixel spacing, thickness and rescale where its own
 * functional groups give them (else the shared groups', else those GDCM read for the image). A frame
 * without a position cannot be placed: the file is SLICE_UNUSABLE. */
int split_frames(const std::string &path, const gdcm::DataSet &ds, unsigned nframes, const slice &s,
                 const std::vector<char> &pixels, std::vector<slice> &frames, ls_error *err) {
    functional_groups fg(ds);
    const gdcm::DataSet *shared = fg.shared();
    if (!fg.per_frame(nframes)) {
        ls_fail(err, LS_ERR_INPUT, "%s: multi-frame DICOM (%u frames) without a position for each frame (Per-frame "
                "Functional Groups) is not supported", path.c_str(), nframes);
        return SLICE_UNUSABLE;
    }
    size_t bytes = pixels.size() / nframes;
    frames.assign(nframes, slice());
    for (unsigned k = 0; k < nframes; k++) {
        const gdcm::DataSet *own = fg.frame(k);
        slice &f = frames[k];
        static_cast<slice_info &>(f) = s;
        f.series = s.series, f.number = s.number, f.description = s.description, f.modality = s.modality;
        f.path = path + " (frame " + std::to_string(k + 1) + ")";
        std::vector<double> ipp = group_values(own, shared, 0x0020, 0x9113, 0x0020, 0x0032);
        std::vector<double> iop = group_values(own, shared, 0x0020, 0x9116, 0x0020, 0x0037);
        std::vector<double> px = group_values(own, shared, 0x0028, 0x9110, 0x0028, 0x0030);
        std::vector<double> th = group_values(own, shared, 0x0028, 0x9110, 0x0018, 0x0050);
        std::vector<double> slope = group_values(own, shared, 0x0028, 0x9145, 0x0028, 0x1053);
        std::vector<double> inter = group_values(own, shared, 0x0028, 0x9145, 0x0028, 0x1052);
        if (ipp.size() != 3) {
            frames.clear();
            ls_fail(err, LS_ERR_INPUT, "%s: frame %u of %u has no ImagePositionPatient (Plane Position Sequence); cannot "
                    "place it", path.c_str(), k + 1, nframes);
            return SLICE_UNUSABLE;
        }
        for (int i = 0; i < 3; i++) f.ipp[i] = ipp[i];
        if (iop.size() == 6)
            for (int i = 0; i < 6; i++) f.iop[i] = iop[i];
        if (px.size() == 2) f.spacing[0] = px[1], f.spacing[1] = px[0]; /* PixelSpacing: between rows, then columns */
        if (th.size() == 1) f.thickness = th[0];
        if (slope.size() == 1) f.slope = slope[0];
        if (inter.size() == 1) f.intercept = inter[0];
        f.pixels.assign(pixels.begin() + (ptrdiff_t)(k * bytes), pixels.begin() + (ptrdiff_t)((k + 1) * bytes));
    }
    return SLICE_FRAMES;
}

/* One of the SLICE_ outcomes. `cap`: bound the header parse with a data_cap (forked child only); `want`:
 * the images asked for (picked). A multi-frame file is split into `frames` (SLICE_FRAMES), or, where
 * `frames` is null (a decoder process), left undecoded (SLICE_MULTIFRAME). */
int read_slice(const std::string &path, slice &s, bool cap, const pick &want, ls_error *err,
               std::vector<slice> *frames = nullptr) {
    if (want.list) return list_slice(path, s, cap, err);
    bool dicom_like = looks_like_dicom(path);
    gdcm::ImageReader reader;
    reader.SetFileName(path.c_str());
    int got = read_header_capped(reader, path, cap);
    if (got < 0) {
        ls_fail(err, LS_ERR_INPUT, "%s: DICOM header declares more data than the file holds (corrupt element length)",
                path.c_str());
        return SLICE_ERROR;
    }
    if (!got) {
        /* ImageReader refuses any file without pixel data (DICOMDIR, SR, RT structures sometimes
         * exported beside the slices): read it as a plain data set and skip it if it is no image at
         * all. A file with an image header (Rows) but no pixels is a damaged slice: an error. */
        gdcm::Reader plain;
        plain.SetFileName(path.c_str());
        if (read_header_capped(plain, path, cap) > 0) {
            const gdcm::DataSet &ds = plain.GetFile().GetDataSet();
            if (!ds.FindDataElement(gdcm::Tag(0x7fe0, 0x0010)) && !ds.FindDataElement(gdcm::Tag(0x0028, 0x0010)))
                return SLICE_NONE;
        }
        if (!dicom_like) return SLICE_NONE;
        ls_fail(err, LS_ERR_INPUT, "%s: DICOM file cannot be decoded (truncated or corrupt)", path.c_str());
        return SLICE_ERROR;
    }
    const gdcm::File &file = reader.GetFile();
    if (!file.GetDataSet().FindDataElement(gdcm::Tag(0x7fe0, 0x0010))) return SLICE_NONE;
    const gdcm::Image &img = reader.GetImage();
    s.path = path;
    read_series_fields(file, s);
    s.compressed = img.GetTransferSyntax().IsEncapsulated();
    unsigned nframes = img.GetNumberOfDimensions() == 2 ? 1 : std::max(img.GetDimension(2), 1u);
    s.frames = nframes;
    if (!picked(s, want, nframes > 1)) return SLICE_OTHER; /* nor decoded, nor checked */
    if (nframes > 1 && !frames) return SLICE_MULTIFRAME;
    if (nframes > 4096) {
        ls_fail(err, LS_ERR_INPUT, "%s: %u frames; at most 4096 slices", path.c_str(), nframes);
        return SLICE_UNUSABLE;
    }
    const gdcm::PixelFormat &pf = img.GetPixelFormat();
    if (pf.GetSamplesPerPixel() != 1) {
        ls_fail(err, LS_ERR_INPUT, "%s: %u samples per pixel (colour); livseg needs greyscale", path.c_str(),
                (unsigned)pf.GetSamplesPerPixel());
        return SLICE_UNUSABLE;
    }
    ls_dtype dt;
    if (!ls_dtype_of(pf.GetScalarType(), &dt)) {
        ls_fail(err, LS_ERR_INPUT, "%s: unsupported pixel format %s", path.c_str(), pf.GetScalarTypeAsString());
        return SLICE_UNUSABLE;
    }
    s.type = pf.GetScalarType();
    s.cols = img.GetDimension(0);
    s.rows = img.GetDimension(1);
    if (s.cols == 0 || s.rows == 0 || s.cols > 4096 || s.rows > 4096) {
        ls_fail(err, LS_ERR_INPUT, "%s: image size %ux%u outside 1..4096", path.c_str(), s.cols, s.rows);
        return SLICE_UNUSABLE;
    }
    for (int i = 0; i < 2; i++) s.spacing[i] = img.GetSpacing(i);
    for (int i = 0; i < 3; i++) s.ipp[i] = img.GetOrigin(i);
    for (int i = 0; i < 6; i++) s.iop[i] = img.GetDirectionCosines(i);
    s.thickness = tag_double(file, 0x0018, 0x0088, tag_double(file, 0x0018, 0x0050, 0));
    s.slope = img.GetSlope();
    s.intercept = img.GetIntercept();
    const gdcm::DataElement &px = file.GetDataSet().GetDataElement(gdcm::Tag(0x7fe0, 0x0010));
    if (!s.compressed && !px.GetVL().IsUndefined())
        if (long long missing = pixel_data_shortfall(path, (uint32_t)px.GetVL())) {
            ls_fail(err, LS_ERR_INPUT, "%s: pixel data cut short, %lld bytes missing at the end of the file (an "
                    "interrupted copy?)", path.c_str(), missing);
            return SLICE_ERROR;
        }
    size_t len = img.GetBufferLength();
    size_t need = (size_t)s.cols * s.rows * pf.GetPixelSize() * nframes;
    if (len < need) {
        ls_fail(err, LS_ERR_INPUT, "%s: pixel data holds %zu bytes, %zu needed", path.c_str(), len, need);
        return SLICE_ERROR;
    }
    s.pixels.resize(len);
    if (!img.GetBuffer(s.pixels.data())) {
        ls_fail(err, LS_ERR_INPUT, "%s: pixel data cannot be decoded", path.c_str());
        return SLICE_ERROR;
    }
    if (nframes > 1) {
        s.pixels.resize(need);
        int r = split_frames(path, file.GetDataSet(), nframes, s, s.pixels, *frames, err);
        s.pixels.clear();
        if (r != SLICE_FRAMES) return r;
        number_frame_echoes(frame_echo_times(file.GetDataSet(), nframes), *frames, s.frame_echoes);
        if (want.echo) /* the echo asked for, frame by frame */
            frames->erase(std::remove_if(frames->begin(), frames->end(), [&](const slice &f) { return f.echo != want.echo; }),
                          frames->end());
        return r;
    }
    return SLICE_READ;
}

double dot3(const double *a, const double *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

void cross3(const double *a, const double *b, double *c) {
    c[0] = a[1] * b[2] - a[2] * b[1];
    c[1] = a[2] * b[0] - a[0] * b[2];
    c[2] = a[0] * b[1] - a[1] * b[0];
}

/* Every slice (all of one series: see series_list) must match the first in size, spacing and orientation. */
ls_status check_one_series(const char *dir, const std::vector<slice> &v, ls_error *err) {
    const slice &a = v[0];
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

/* Each step must run along the normal: a per-gap test catches one displaced slice that a
 * first-to-last test would miss. Tolerance: 2% of the gap (about 1 degree) plus 5 um for positions
 * written with few decimals. `v` is sorted, at least two slices. */
ls_status check_steps_along_normal(const char *dir, const std::vector<slice> &v, const double normal[3], ls_error *err) {
    size_t n = v.size();
    double worst_excess = -INFINITY, worst = 0, worst_gap = 0;
    size_t worst_at = 1;
    for (size_t i = 1; i < n; i++) {
        double e[3], across[3];
        for (int c = 0; c < 3; c++) e[c] = v[i].ipp[c] - v[i - 1].ipp[c];
        double along = dot3(e, normal);
        for (int c = 0; c < 3; c++) across[c] = e[c] - along * normal[c];
        double off = sqrt(dot3(across, across)), excess = off - (0.02 * fabs(along) + 5e-3);
        if (excess > worst_excess) worst_excess = excess, worst = off, worst_gap = along, worst_at = i;
    }
    if (worst_excess > 0)
        return ls_fail(err, LS_ERR_INPUT,
                       "%s: slice positions are offset across the slice normal by %.3g mm over a %.4g mm gap (%.2f degrees: "
                       "gantry tilt or inconsistent ImagePositionPatient, between %s and %s); not supported",
                       dir, worst, worst_gap, atan2(worst, fabs(worst_gap)) * 180 / M_PI, v[worst_at - 1].path.c_str(),
                       v[worst_at].path.c_str());
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
    LS_TRY(check_steps_along_normal(dir, v, normal, err));
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
        for (int j = 0; j < 4; j++) ras[i][j] = (i < 2 ? -1 : 1) * lps[i][j] + 0.0; /* + 0.0: no -0 in headers */
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

/* Shared with the parent: the file the child is parsing, named in the error if GDCM kills it, and how
 * many of the directory's files it has done, for a progress bar (written and read with __atomic: the
 * two processes run at once). */
struct progress_page {
    char current[4096];
    int64_t done, total;
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

/* A pipe's buffer raised from 64 kB to 1 MB (Linux's default cap for unprivileged processes): a volume
 * of 300 MB then crosses in 300 wake-ups of the reader instead of 4800 (measured: a 300-slice uncompressed
 * read 1.16 -> 0.84 s), and a decoder can hand over a whole 512x512 slice without waiting. Best effort. */
void widen_pipe(int fd) { fcntl(fd, F_SETPIPE_SZ, 1 << 20); }

/* The one line for a reader process that ended without its result while on `file` (GDCM's assertions kill
 * it): the same whether it was the reader child or one of its decoders. */
ls_status library_failed(ls_error *err, const char *dir, const char *file, const char *why) {
    return ls_fail(err, LS_ERR_INPUT, "%s: the DICOM library failed on %s (%s); the file is probably corrupt or truncated",
                   dir, file, why);
}

/* ------------------------------------------------------------------------------------- decoders */

/* One file's outcome as a decoder sends it; the series and modality strings and the pixels follow. */
static_assert(std::is_trivially_copyable<slice_info>::value, "slice_info travels through a pipe as bytes");

struct slice_msg {
    int32_t got;   /* read_slice's outcome, SLICE_... */
    ls_error err;  /* after SLICE_ERROR and SLICE_UNUSABLE */
    slice_info info;
    uint32_t str_len[4]; /* the strings_of, after every outcome but SLICE_ERROR and SLICE_NONE */
    uint64_t pixel_len;  /* non-zero after SLICE_READ */
};

/* A slice's strings in the order a slice_msg sends them. */
void strings_of(slice &s, std::string *out[4]) {
    out[0] = &s.series, out[1] = &s.number, out[2] = &s.description, out[3] = &s.modality;
}

bool carries_slice(int got) { return got != SLICE_ERROR && got != SLICE_NONE; }

/* A decoder process: reads files first, first + stride, ... in turn and sends each outcome; stops after
 * the first error (the collector stops there too) or when the collector has gone (a failed write). */
[[noreturn]] void decoder_main(const std::vector<std::string> &files, const pick &want, size_t first,
                               size_t stride, int fd) {
    for (size_t i = first; i < files.size(); i += stride) {
        slice s;
        slice_msg m{};
        try {
            m.got = read_slice(files[i], s, true, want, &m.err);
        } catch (const std::bad_alloc &) {
            ls_fail(&m.err, LS_ERR_NOMEM, "%s: out of memory reading the slice", files[i].c_str()), m.got = SLICE_ERROR;
        } catch (...) {
            ls_fail(&m.err, LS_ERR_INPUT, "%s: DICOM reading failed", files[i].c_str()), m.got = SLICE_ERROR;
        }
        std::string *str[4];
        strings_of(s, str);
        if (carries_slice(m.got)) {
            m.info = s;
            for (int k = 0; k < 4; k++) m.str_len[k] = (uint32_t)str[k]->size();
            m.pixel_len = s.pixels.size();
        }
        bool ok = write_all(fd, &m, sizeof m);
        for (int k = 0; k < 4 && ok && carries_slice(m.got); k++) ok = write_all(fd, str[k]->data(), str[k]->size());
        if (ok && carries_slice(m.got)) ok = write_all(fd, s.pixels.data(), s.pixels.size());
        if (!ok || m.got == SLICE_ERROR) _exit(ok ? 0 : 1);
    }
    _exit(0);
}

/* n decoder processes for files[first..]: decoder k reads files first + k, first + k + n, ...; their
 * outcomes are taken back in file order. If one cannot be started, there are none (started() is false). */
class decoder_pool {
  public:
    /* `keep_fd`: this process's pipe to its parent; closed in the decoders, so that the parent sees the
     * end of the stream when this process dies even while decoders live. */
    decoder_pool(const char *dir, const std::vector<std::string> &files, const pick &want, size_t first, int n,
                 int keep_fd)
        : dir_(dir), files_(files), first_(first) {
        pid_t self = getpid();
        for (int k = 0; k < n; k++) {
            int p[2];
            if (pipe(p) != 0) break;
            widen_pipe(p[0]);
            pid_t pid = fork();
            if (pid == 0) {
                close(p[0]), close(keep_fd);
                for (int fd : fds_) close(fd);
                /* A decoder must not outlive its collector (it would decode for nobody). */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != self) _exit(1);
                decoder_main(files, want, first + (size_t)k, (size_t)n, p[1]);
            }
            close(p[1]);
            if (pid < 0) {
                close(p[0]);
                break;
            }
            pids_.push_back(pid), fds_.push_back(p[0]);
        }
        if ((int)pids_.size() < n) stop();
    }
    ~decoder_pool() { stop(); }
    decoder_pool(const decoder_pool &) = delete;
    decoder_pool &operator=(const decoder_pool &) = delete;

    bool started() const { return !pids_.empty(); }

    /* File i's outcome, as read_slice returns it (err set after SLICE_ERROR and SLICE_UNUSABLE). Call
     * with i = first, first + 1, ... in turn, and not again after SLICE_ERROR. */
    int get(size_t i, slice &s, ls_error *err) {
        size_t k = (i - first_) % pids_.size();
        slice_msg m;
        if (!read_all(fds_[k], &m, sizeof m)) return died(k, i, err);
        if ((m.got == SLICE_ERROR || m.got == SLICE_UNUSABLE) && err) *err = m.err;
        if (!carries_slice(m.got)) return m.got;
        static_cast<slice_info &>(s) = m.info;
        s.path = files_[i];
        std::string *str[4];
        strings_of(s, str);
        bool sane = m.got >= SLICE_UNUSABLE && m.got <= SLICE_MULTIFRAME && m.pixel_len <= ((uint64_t)1 << 32);
        for (int j = 0; j < 4; j++) sane = sane && m.str_len[j] <= 65536;
        if (!sane)
            return ls_fail(err, LS_ERR_INPUT, "%s: garbled reply from the DICOM decoder for %s", dir_, files_[i].c_str()),
                   SLICE_ERROR;
        bool ok = true;
        for (int j = 0; j < 4 && ok; j++) str[j]->resize(m.str_len[j]), ok = read_all(fds_[k], &(*str[j])[0], m.str_len[j]);
        s.pixels.resize(m.pixel_len);
        if (!ok || !read_all(fds_[k], s.pixels.data(), m.pixel_len)) return died(k, i, err);
        return m.got;
    }

  private:
    /* Decoder k ended while file i, its next file, was due: GDCM killed it there (an assertion). */
    int died(size_t k, size_t i, ls_error *err) {
        int st = 0;
        kill(pids_[k], SIGKILL); /* if it is alive after all, it is of no more use */
        waitpid(pids_[k], &st, 0);
        pids_[k] = -1;
        library_failed(err, dir_, files_[i].c_str(),
                       WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL ? strsignal(WTERMSIG(st)) : "no result");
        return SLICE_ERROR;
    }

    void stop() {
        for (size_t k = 0; k < pids_.size(); k++) {
            close(fds_[k]);
            if (pids_[k] > 0) kill(pids_[k], SIGKILL), waitpid(pids_[k], nullptr, 0);
        }
        pids_.clear(), fds_.clear();
    }

    const char *dir_;
    const std::vector<std::string> &files_;
    size_t first_;
    std::vector<pid_t> pids_;
    std::vector<int> fds_;
};

/* ------------------------------------------------------------------------------------ the series */

/* The series a directory's images belong to, in the order first met, with their image counts. A series
 * is its SeriesInstanceUID; images without one (anonymised) are told apart by number and description. */
struct series_entry {
    std::string uid, number, description, modality; /* modality, cols, rows: of its first image */
    unsigned cols, rows;
    size_t images, frames;
    /* EchoNumbers met, with the first EchoTime of each, sorted; images without the tag (CT, most MR)
     * add none, so a series that numbers only some of its images is not taken for a multi-echo one. */
    std::vector<std::pair<int, double>> echoes;

    void add_echo(int echo, double ms) {
        if (echo <= 0) return;
        for (const auto &e : echoes)
            if (e.first == echo) return;
        echoes.push_back({echo, ms});
        std::sort(echoes.begin(), echoes.end());
    }
    /* "1 (2.38 ms), 2 (4.76 ms)" */
    std::string describe_echoes() const {
        std::string out;
        char buf[64];
        for (size_t i = 0; i < echoes.size(); i++) {
            snprintf(buf, sizeof buf, "%s%d (%.3g ms)", i ? ", " : "", echoes[i].first, echoes[i].second);
            out += buf;
        }
        return out;
    }
};

class series_list {
  public:
    void add(const slice &s) {
        for (series_entry &e : v_)
            if (!e.uid.empty() || !s.series.empty() ? e.uid == s.series : e.number == s.number && e.description == s.description) {
                e.images++, e.frames += s.frames;
                e.add_echo(s.echo, s.echo_time);
                for (const auto &x : s.frame_echoes) e.add_echo(x.first, x.second);
                return;
            }
        v_.push_back({s.series, s.number, s.description, s.modality, s.cols, s.rows, 1, s.frames, {}});
        v_.back().add_echo(s.echo, s.echo_time);
        for (const auto &x : s.frame_echoes) v_.back().add_echo(x.first, x.second);
    }
    const series_entry &operator[](size_t i) const { return v_[i]; }
    size_t size() const { return v_.size(); }

    /* Those that `want` names, as in_series takes slices. */
    series_list named(const std::string &want) const {
        series_list out;
        for (const series_entry &e : v_)
            if (names_series(want, e.uid, e.number, e.description)) out.v_.push_back(e);
        return out;
    }

    /* 3 "CT Body 3.0" (300 images), 601 "Dose Report" (1 image), ...: number and description, the UID
     * where both are missing; the first 8, then how many more. Bytes from the files, so printable only. */
    std::string describe() const {
        std::string out;
        for (size_t i = 0; i < v_.size() && i < 8; i++) {
            const series_entry &e = v_[i];
            std::string name = e.number;
            if (!e.description.empty()) name += (name.empty() ? "\"" : " \"") + e.description.substr(0, 64) + "\"";
            if (name.empty()) name = e.uid.empty() ? "unnamed" : "UID " + e.uid.substr(0, 64);
            for (char &c : name) c = c >= 0x20 && c < 0x7f ? c : '?';
            out += (i ? ", " : "") + name + " (" + std::to_string(e.images) + (e.images == 1 ? " image)" : " images)");
        }
        if (v_.size() > 8) out += ", and " + std::to_string(v_.size() - 8) + " more";
        return out;
    }

    /* As ls_dicom_list hands them out. */
    std::vector<ls_dicom_series> to_c() const {
        std::vector<ls_dicom_series> out(v_.size());
        for (size_t i = 0; i < v_.size(); i++) {
            const series_entry &e = v_[i];
            ls_dicom_series &c = out[i];
            memset(&c, 0, sizeof c);
            copy_printable(c.uid, sizeof c.uid, e.uid);
            copy_printable(c.number, sizeof c.number, e.number);
            copy_printable(c.description, sizeof c.description, e.description);
            copy_printable(c.modality, sizeof c.modality, e.modality);
            c.images = (int)std::min(e.images, (size_t)INT_MAX);
            c.frames = (int)std::min(e.frames, (size_t)INT_MAX);
            c.cols = (int)e.cols, c.rows = (int)e.rows;
            c.n_echoes = (int)e.echoes.size();
            for (size_t k = 0; k < e.echoes.size() && k < 16; k++) c.echo[k] = e.echoes[k].first, c.echo_ms[k] = e.echoes[k].second;
        }
        return out;
    }

  private:
    static void copy_printable(char *dst, size_t cap, const std::string &src) {
        size_t n = std::min(src.size(), cap - 1);
        for (size_t i = 0; i < n; i++) dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
        dst[n] = 0;
    }
    std::vector<series_entry> v_;
};

/* Any image at all: a directory without one is an error. */
ls_status check_any_image(const char *dir, const series_list &seen, ls_error *err) {
    if (seen.size() == 0) return ls_fail(err, LS_ERR_INPUT, "%s: no DICOM images found (in it or its subdirectories)", dir);
    return LS_OK;
}

/* After every file is read: the directory must hold one series, or `want` must name exactly one; that
 * series must hold one echo (EchoNumbers), or `want` must name one of its echoes. `which`: that series. */
ls_status check_series_found(const char *dir, const pick &want, const series_list &seen, ls_dicom_series *which,
                             ls_error *err) {
    LS_TRY(check_any_image(dir, seen, err));
    if (want.series.empty() && seen.size() > 1)
        return ls_fail(err, LS_ERR_INPUT, "%s: holds %zu series; choose one with --series NUMBER, DESCRIPTION or UID: %s",
                       dir, seen.size(), seen.describe().c_str());
    series_list named = want.series.empty() ? seen : seen.named(want.series);
    if (named.size() == 0)
        return ls_fail(err, LS_ERR_INPUT, "%s: no series \"%s\" (a SeriesNumber, SeriesDescription or SeriesInstanceUID); it holds %s",
                       dir, want.series.c_str(), seen.describe().c_str());
    if (named.size() > 1)
        return ls_fail(err, LS_ERR_INPUT, "%s: \"%s\" names %zu series: %s; choose one by another of its names or its UID",
                       dir, want.series.c_str(), named.size(), named.describe().c_str());
    const series_entry &e = named[0];
    bool has = false;
    for (const auto &x : e.echoes) has |= x.first == want.echo;
    if (want.echo && !has)
        return ls_fail(err, LS_ERR_INPUT, "%s: no echo %d in the series; its echoes (EchoNumbers, EchoTime): %s", dir,
                       want.echo, e.describe_echoes().c_str());
    /* Several echoes image each position once each (in- and opposed-phase T1, a T2* series): one
     * volume needs one of them. */
    if (!want.echo && e.echoes.size() > 1)
        return ls_fail(err, LS_ERR_INPUT, "%s: the series holds %zu echoes; choose one with --echo N: %s", dir,
                       e.echoes.size(), e.describe_echoes().c_str());
    *which = named.to_c()[0];
    return LS_OK;
}

enum { MAX_FILES = 4096 * 4, MAX_DEPTH = 8 };

/* The regular files under `path`, subdirectories included down to MAX_DEPTH levels (a study exported
 * from a PACS or to a disc nests its series: PATIENT/STUDY/SERIES/files), not following links to
 * directories (no loops), skipping names that start with a dot; at most MAX_FILES + 1 (the caller
 * refuses more). */
void collect_files(const std::string &path, int depth, std::vector<std::string> &out) {
    DIR *dp = opendir(path.c_str());
    if (!dp) return;
    while (struct dirent *de = readdir(dp)) {
        if (de->d_name[0] == '.' || out.size() > MAX_FILES) continue;
        std::string p = path + "/" + de->d_name;
        struct stat st, lst;
        if (stat(p.c_str(), &st) != 0) continue;
        if (S_ISREG(st.st_mode)) out.push_back(p);
        else if (S_ISDIR(st.st_mode) && depth < MAX_DEPTH && lstat(p.c_str(), &lst) == 0 && !S_ISLNK(lst.st_mode))
            collect_files(p, depth + 1, out);
    }
    closedir(dp);
}

/* Every file of `dir` and its subdirectories, sorted by path: the order files are read and errors met. */
ls_status list_files(const char *dir, std::vector<std::string> &files, ls_error *err) {
    DIR *dp = opendir(dir);
    if (!dp) return ls_fail(err, LS_ERR_INPUT, "%s: cannot open directory (%s)", dir, strerror(errno));
    closedir(dp);
    collect_files(dir, 0, files);
    if (files.size() > MAX_FILES)
        return ls_fail(err, LS_ERR_INPUT, "%s: more than %d files in it and its subdirectories; too many for a study",
                       dir, (int)MAX_FILES);
    std::sort(files.begin(), files.end());
    return LS_OK;
}

/* Every file of `dir`: the slices `want` picks into `slices`, the series of every image into `seen`, the
 * first unusable picked image's error into `unusable`. `pg` is non-null in the forked child
 * only: there each header parse is under a data_cap, and the files after a compressed first image go to
 * up to `readers` decoder processes. In-process (pg null) the files are read here, uncapped. `keep_fd`:
 * the child's pipe to the caller. */
ls_status read_files(const char *dir, const pick &want, progress_page *pg, int readers, int keep_fd,
                     std::vector<slice> &slices, series_list &seen, ls_error &unusable, ls_error *err) {
    std::vector<std::string> files;
    LS_TRY(list_files(dir, files, err));
    if (pg) __atomic_store_n(&pg->total, (int64_t)files.size(), __ATOMIC_RELAXED);
    {
        std::unique_ptr<decoder_pool> pool;
        for (size_t i = 0; i < files.size(); i++) {
            if (pg) snprintf(pg->current, sizeof pg->current, "%s", files[i].c_str());
            slice s;
            std::vector<slice> frames;
            ls_error e = {};
            int r = pool ? pool->get(i, s, &e) : read_slice(files[i], s, pg != nullptr, want, &e, &frames);
            if (r == SLICE_MULTIFRAME) r = read_slice(files[i], s, pg != nullptr, want, &e, &frames); /* a decoder's */
            if (r == SLICE_ERROR) {
                if (err) *err = e;
                return e.code ? e.code : LS_ERR_INPUT;
            }
            if (carries_slice(r)) seen.add(s);
            if (r == SLICE_UNUSABLE && !unusable.code) unusable = e;
            /* Decoders pay where decoding costs more than copying a slice to this process: compressed
             * series. Two files a decoder at least; one decoder would be this process itself. */
            if (carries_slice(r) && !pool && pg && s.compressed) {
                int n = std::min({readers, 16, (int)((files.size() - i - 1) / 2)});
                if (n > 1) pool.reset(new decoder_pool(dir, files, want, i + 1, n, keep_fd));
                if (pool && !pool->started()) pool.reset();
            }
            if (r == SLICE_READ) slices.push_back(std::move(s));
            if (r == SLICE_FRAMES)
                for (slice &f : frames) slices.push_back(std::move(f));
            if (pg) __atomic_store_n(&pg->done, (int64_t)i + 1, __ATOMIC_RELAXED);
            /* Bounds before the next file's pixels are held: at most 4096 slices and 2^31 voxels. */
            bool more = r == SLICE_READ || r == SLICE_FRAMES;
            if (more && slices.size() > 4096)
                return ls_fail(err, LS_ERR_INPUT, "%s: more than 4096 slices", dir);
            if (more && (double)slices.size() * slices[0].cols * slices[0].rows > 2147483648.0)
                return ls_fail(err, LS_ERR_INPUT, "%s: more than 2^31 voxels (%ux%u x %zu slices)", dir, slices[0].cols,
                               slices[0].rows, slices.size());
        }
    }
    if (pg) pg->current[0] = 0;
    return LS_OK;
}

/* The volume of the images `want` picks, and which series they are; arguments as read_files. */
ls_status read_series(const char *dir, const pick &want, ls_volume *out, ls_dicom_series *which, progress_page *pg,
                      int readers, int keep_fd, ls_error *err) {
    std::vector<slice> slices;
    series_list seen;
    ls_error unusable = {}; /* the first SLICE_UNUSABLE's */
    LS_TRY(read_files(dir, want, pg, readers, keep_fd, slices, seen, unusable, err));
    LS_TRY(check_series_found(dir, want, seen, which, err));
    if (unusable.code) {
        if (err) *err = unusable;
        return unusable.code;
    }
    if (slices.empty()) return ls_fail(err, LS_ERR_INPUT, "%s: no DICOM images found", dir);
    LS_TRY(check_one_series(dir, slices, err));
    double step[3];
    LS_TRY(sort_and_check_spacing(dir, slices, step, err));
    return assemble(dir, slices, step, out, err);
}

/* The series of `dir` (want.list), headers only; arguments as read_files. */
ls_status list_series(const char *dir, const pick &want, std::vector<ls_dicom_series> &out, progress_page *pg,
                      ls_error *err) {
    std::vector<slice> slices;
    series_list seen;
    ls_error unusable = {};
    LS_TRY(read_files(dir, want, pg, 1, -1, slices, seen, unusable, err));
    LS_TRY(check_any_image(dir, seen, err));
    out = seen.to_c();
    return LS_OK;
}

/* What a job yields: a volume and its series, or (want.list) the listing. */
struct job_result {
    ls_volume vol = {};
    ls_dicom_series series = {};
    std::vector<ls_dicom_series> listing;
};

/* A job's work, in the child or in-process. */
ls_status run_job(const char *dir, const pick &want, job_result &res, progress_page *pg, int readers, int fd, ls_error *err) {
    return want.list ? list_series(dir, want, res.listing, pg, err)
                     : read_series(dir, want, &res.vol, &res.series, pg, readers, fd, err);
}

/* What the child sends before its result. */
struct reply {
    ls_status status;
    ls_error err;
    ls_volume vol;          /* data pointer meaningless across processes */
    ls_dicom_series series; /* the volume's */
    uint64_t bytes;         /* the result that follows: the volume's voxels, or the listing's ls_dicom_series */
};

ls_status run_job_guarded(const char *dir, const pick &want, job_result &res, ls_error *err) {
    try {
        return run_job(dir, want, res, nullptr, 0, -1, err);
    } catch (const std::bad_alloc &) {
        ls_volume_free(&res.vol);
        return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory reading the series", dir);
    } catch (const std::exception &e) {
        ls_volume_free(&res.vol);
        return ls_fail(err, LS_ERR_INPUT, "%s: DICOM reading failed (%s)", dir, e.what());
    } catch (...) {
        ls_volume_free(&res.vol);
        return ls_fail(err, LS_ERR_INPUT, "%s: DICOM reading failed", dir);
    }
}

[[noreturn]] void child_main(const char *dir, const pick &want, int readers, int fd, progress_page *pg) {
    /* GDCM prints warnings and assertion texts; the parent reports one line of its own. */
    /* stdout too: the child holds a copy of the caller's unflushed stdio buffers, and GDCM's abort
     * path would flush that copy, printing the caller's pending output a second time. */
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 1), dup2(devnull, 2);
    /* A GDCM assertion must end only this child, quietly: the caller's crash handlers (a crash
     * reporter, a fuzzer's) would otherwise report a failure the parent already turns into an error. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) sigaction(sig, &dfl, nullptr);
    reply r;
    memset(&r, 0, sizeof r);
    job_result res;
    try {
        r.status = run_job(dir, want, res, pg, readers, fd, &r.err);
    } catch (...) {
        r.status = ls_fail(&r.err, LS_ERR_INPUT, "%s: DICOM reading failed", dir);
    }
    const void *result = want.list ? static_cast<const void *>(res.listing.data()) : res.vol.data;
    if (r.status == LS_OK)
        r.bytes = want.list ? res.listing.size() * sizeof(ls_dicom_series) : ls_volume_nvox(&res.vol) * sizeof(float);
    r.vol = res.vol, r.series = res.series;
    r.vol.data = nullptr;
    bool ok = write_all(fd, &r, sizeof r);
    if (ok && r.bytes) ok = write_all(fd, result, r.bytes);
    _exit(ok ? 0 : 1);
}

}  // namespace

/* A read begun by ls_dicom_begin (or ls_dicom_list's): the reader child, and the outcome once collected,
 * or at once when there is no child (no pipe or shared page to be had: the series was read in-process). */
struct ls_dicom_job {
    std::string dir;
    pick want;
    progress_page *pg = nullptr;
    int fd = -1;
    pid_t pid = -1;
    ls_status status = LS_OK; /* of the read, or of a failed fork */
    ls_error err = {};
    job_result res;
};

static ls_status begin_job(const char *dir, const pick &want, int readers, ls_dicom_job **out, ls_error *err) {
    ls_dicom_job *job = new (std::nothrow) ls_dicom_job;
    if (!job) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory", dir);
    *out = job;
    job->dir = dir;
    job->want = want;
    void *shared = mmap(nullptr, sizeof(progress_page), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int fds[2];
    if (shared == MAP_FAILED || pipe(fds) != 0) {
        if (shared != MAP_FAILED) munmap(shared, sizeof(progress_page));
        /* no isolation: read in-process */
        job->status = run_job_guarded(dir, job->want, job->res, &job->err);
        return LS_OK;
    }
    job->pg = static_cast<progress_page *>(shared);
    job->pg->current[0] = 0;
    job->pg->done = job->pg->total = 0;
    widen_pipe(fds[0]);
    job->pid = fork();
    if (job->pid == 0) {
        close(fds[0]);
        child_main(dir, job->want, readers, fds[1], job->pg);
    }
    close(fds[1]);
    job->fd = fds[0];
    if (job->pid < 0) {
        job->status = ls_fail(&job->err, LS_ERR_IO, "%s: cannot start the DICOM reader process (%s)", dir, strerror(errno));
        close(job->fd);
    }
    return LS_OK;
}

extern "C" ls_status ls_dicom_begin(const char *dir, const ls_dicom_pick *p, int readers, ls_dicom_job **out,
                                     ls_error *err) {
    pick want;
    want.series = p && p->series ? p->series : "";
    want.echo = p ? p->echo : 0;
    return begin_job(dir, want, readers, out, err);
}

/* Reports the child's files done every 0.1 s until its reply starts (or it dies), then once more. */
static void watch(ls_dicom_job *job, ls_progress_fn progress, void *pctx) {
    if (!progress) return;
    struct pollfd p = {job->fd, POLLIN, 0};
    int64_t total = 0;
    for (;;) {
        int r = poll(&p, 1, 100);
        if (r < 0 && errno == EINTR) continue;
        total = __atomic_load_n(&job->pg->total, __ATOMIC_RELAXED);
        if (r != 0) break;
        if (total > 0) progress(pctx, __atomic_load_n(&job->pg->done, __ATOMIC_RELAXED), total);
    }
    if (total > 0) progress(pctx, __atomic_load_n(&job->pg->done, __ATOMIC_RELAXED), total);
}

/* Collects the child's outcome into the job, as an in-process read leaves it; names the file the child
 * was reading when it died. */
static void collect(ls_dicom_job *job, ls_progress_fn progress, void *pctx) {
    watch(job, progress, pctx);
    reply r;
    char *result = nullptr;
    bool got = read_all(job->fd, &r, sizeof r);
    if (got && r.status == LS_OK) {
        size_t want_bytes = job->want.list ? r.bytes - r.bytes % sizeof(ls_dicom_series)
                                           : ls_volume_nvox(&r.vol) * sizeof(float);
        result = r.bytes == want_bytes && r.bytes ? static_cast<char *>(malloc(r.bytes)) : nullptr;
        if (r.bytes != want_bytes || !r.bytes) got = false; /* not what a reader child sends */
        else if (!result) r.status = ls_fail(&r.err, LS_ERR_NOMEM, "%s: out of memory for the series", job->dir.c_str());
        else if (!read_all(job->fd, result, r.bytes)) got = false;
    }
    close(job->fd);
    int wst = 0;
    waitpid(job->pid, &wst, 0);
    if (!got) {
        job->status = library_failed(&job->err, job->dir.c_str(), job->pg->current[0] ? job->pg->current : "the series",
                                     WIFSIGNALED(wst) ? strsignal(WTERMSIG(wst)) : "no result");
    } else if (r.status != LS_OK) {
        job->status = r.status, job->err = r.err;
    } else if (job->want.list) {
        const ls_dicom_series *e = reinterpret_cast<const ls_dicom_series *>(result);
        job->res.listing.assign(e, e + r.bytes / sizeof(ls_dicom_series));
    } else {
        job->res.vol = r.vol;
        job->res.vol.data = reinterpret_cast<float *>(result);
        job->res.series = r.series;
        result = nullptr;
    }
    free(result);
}

static void end_job(ls_dicom_job *job) {
    if (job->pg) munmap(job->pg, sizeof(progress_page));
    delete job;
}

extern "C" ls_status ls_dicom_end(ls_dicom_job *job, ls_progress_fn progress, void *pctx, ls_volume *out,
                                   ls_dicom_series *series, ls_error *err) {
    memset(out, 0, sizeof *out);
    if (job->pid > 0) collect(job, progress, pctx);
    ls_status st = job->status;
    if (st) {
        if (err) *err = job->err;
        ls_volume_free(&job->res.vol);
    } else {
        *out = job->res.vol;
        if (series) *series = job->res.series;
    }
    end_job(job);
    return st;
}

extern "C" ls_status ls_dicom_read(const char *dir, const ls_dicom_pick *p, int readers, ls_volume *out, ls_error *err) {
    ls_dicom_job *job;
    memset(out, 0, sizeof *out);
    LS_TRY(ls_dicom_begin(dir, p, readers, &job, err));
    return ls_dicom_end(job, nullptr, nullptr, out, nullptr, err);
}

extern "C" ls_status ls_dicom_list(const char *dir, ls_dicom_series **out, int *n, ls_error *err) {
    *out = nullptr, *n = 0;
    pick want;
    want.list = true;
    ls_dicom_job *job;
    LS_TRY(begin_job(dir, want, 1, &job, err));
    if (job->pid > 0) collect(job, nullptr, nullptr);
    ls_status st = job->status;
    const std::vector<ls_dicom_series> &listing = job->res.listing;
    if (st) {
        if (err) *err = job->err;
    } else if (!(*out = static_cast<ls_dicom_series *>(ls_calloc(listing.size(), sizeof(ls_dicom_series), err)))) {
        st = LS_ERR_NOMEM;
    } else {
        memcpy(*out, listing.data(), listing.size() * sizeof(ls_dicom_series));
        *n = (int)listing.size();
    }
    end_job(job);
    return st;
}
