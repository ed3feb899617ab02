// A finished job's files as the lightbox and the stars take them: their API and Library addresses.

// urls: the page data's urls.
export function createGallery(urls) {
  const apiUrl = (kind, id) => `${kind === "video" ? urls.videos : urls.images}${id}/`;
  const pageUrl = (pattern, kind, id) => pattern.replace("/KIND/0/", `/${kind}/${id}/`);

  // The job's images in batch order, or its video, as lightbox items.
  function items(job) {
    const files = job.video ? [["video", job.video]] : (job.images || []).map((image) => ["image", image]);
    return files.map(([kind, file]) => ({
      kind, id: file.id, src: file.url, poster: file.thumbnail_url, title: job.prompt, keep: file.keep,
      apiUrl: apiUrl(kind, file.id), downloadUrl: pageUrl(urls.library_download, kind, file.id),
      detailsUrl: pageUrl(urls.library_detail, kind, file.id),
    }));
  }

  // All of a finished job's files and their parameters in one zip (GET /api/jobs/{id}/download/).
  const zipUrl = (job) => `${urls.jobs}${job.id}/download/`;

  return { items, apiUrl, zipUrl };
}
