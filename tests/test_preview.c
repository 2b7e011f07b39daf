/*
 * test_preview.c — the preview PNG: size, outline present, and the display convention (patient's
 * right on the image's left, anterior and superior at the top), read back through libpng.
 */
#include <png.h>

#include "preview.h"
#include "test.h"

static uint8_t *read_png(const char *path, int *w, int *h) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path)) return NULL;
    img.format = PNG_FORMAT_RGB;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(img));
    if (!png_image_finish_read(&img, NULL, buf, 0, NULL)) {
        free(buf);
        return NULL;
    }
    *w = (int)img.width, *h = (int)img.height;
    return buf;
}

TEST(orientation_and_outline) {
    ls_volume v = {0};
    int64_t d[3] = {40, 30, 10};
    double aff[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 3, 0}, {0, 0, 0, 1}};
    ls_geom_from_affine(&v.geom, d, aff);
    size_t n = 40 * 30 * 10;
    v.data = calloc(n, sizeof(float));
    uint8_t *mask = calloc(n, 1);
    /* A box at the patient's right (large i), anterior (large j), superior (large k). */
    for (int k = 6; k < 10; k++)
        for (int j = 18; j < 28; j++)
            for (int i = 26; i < 38; i++) mask[i + 40 * (j + 30 * k)] = 1, v.data[i + 40 * (j + 30 * k)] = 100;
    char path[600];
    snprintf(path, sizeof path, "%s/preview.png", test_tmpdir());
    ls_error err = {0};
    REQUIRE(ls_preview_write_png(path, &v, mask, 0, 100, NULL, &err) == LS_OK, "%s", err.msg);
    int w, h;
    uint8_t *rgb = read_png(path, &w, &h);
    REQUIRE(rgb != NULL, "cannot read back %s", path);
    /* Panels at 1 mm: axial 40x30, coronal 40x30, sagittal 30x30, 4-pixel gaps. */
    CHECK(w == 40 + 40 + 30 + 8 && h == 30, "size %dx%d", w, h);
    int red = 0, red_left = 0, red_top = 0;
    for (int r = 0; r < h; r++)
        for (int c = 0; c < 40; c++) {
            const uint8_t *p = rgb + ((size_t)r * w + c) * 3;
            if (p[0] == 255 && p[1] == 40) {
                red++;
                red_left += c < 20;
                red_top += r < 15;
            }
        }
    CHECK(red > 0, "no outline in the axial panel");
    CHECK(red_left == red && red_top == red, "axial: %d outline pixels, %d on the left, %d at the top", red, red_left, red_top);
    int red_cor_top = 0, red_cor = 0;
    for (int r = 0; r < h; r++)
        for (int c = 44; c < 84; c++) {
            const uint8_t *p = rgb + ((size_t)r * w + c) * 3;
            if (p[0] == 255 && p[1] == 40) red_cor++, red_cor_top += r < 15;
        }
    CHECK(red_cor > 0 && red_cor_top == red_cor, "coronal: superior must be at the top (%d of %d)", red_cor_top, red_cor);
    CHECK(ls_preview_write_png(path, &v, mask, 0, 100, path, &err) == LS_ERR_INPUT, "overwrote protected file");
    free(rgb);
    free(mask);
    free(v.data);
}

TEST(real_scan) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    char ip[600], mp[600], out[600];
    snprintf(ip, sizeof ip, "%s/btcv/btcv_00_ct.nii.gz", data);
    snprintf(mp, sizeof mp, "%s/btcv/btcv_00_liver.nii.gz", data);
    ls_volume img, lab, ri, rl;
    ls_error err = {0};
    REQUIRE(ls_volume_read(ip, &img, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_volume_read(mp, &lab, &err) == LS_OK, "%s", err.msg);
    ls_orient o;
    ls_orient_from_geom(&img.geom, &o);
    REQUIRE(ls_volume_to_ras(&img, &o, &ri, &err) == LS_OK, "%s", err.msg);
    REQUIRE(ls_volume_to_ras(&lab, &o, &rl, &err) == LS_OK, "%s", err.msg);
    size_t n = ls_volume_nvox(&rl);
    uint8_t *m = malloc(n);
    for (size_t i = 0; i < n; i++) m[i] = rl.data[i] > 0.5f;
    snprintf(out, sizeof out, "%s/btcv_00_preview.png", test_tmpdir());
    CHECK(ls_preview_write_png(out, &ri, m, -125, 275, NULL, &err) == LS_OK, "%s", err.msg);
    int w, h;
    uint8_t *rgb = read_png(out, &w, &h);
    CHECK(rgb && w > 300 && h > 100, "preview of btcv_00 unreadable or too small");
    /* The liver is on the patient's right: its outline sits in the left half of the axial panel. */
    if (rgb) {
        int left = 0, right = 0; /* the three panels are about equally wide for this scan */
        for (int r = 0; r < h; r++)
            for (int c = 0; c < w / 3; c++) {
                const uint8_t *p = rgb + ((size_t)r * w + c) * 3;
                if (p[0] == 255 && p[1] == 40) {
                    if (c < w / 6) left++;
                    else right++;
                }
            }
        CHECK(left > right, "liver outline: %d pixels left, %d right of the axial centre", left, right);
    }
    if (getenv("LS_KEEP_PREVIEW")) printf("  preview kept at %s\n", out);
    free(rgb);
    free(m);
    ls_volume_free(&img), ls_volume_free(&lab), ls_volume_free(&ri), ls_volume_free(&rl);
}

int main(void) {
    RUN(orientation_and_outline);
    RUN(real_scan);
    return test_summary();
}
