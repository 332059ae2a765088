/**
 * The S3 subset the bulk workflow and its tools need, path-style only (`/<bucket>/<key>`):
 * ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation, ListObjects (v1 and
 * v2, with delimiter and encoding-type=url), PutObject, GetObject (with Range), HeadObject,
 * DeleteObject, DeleteObjects and multipart uploads — enough for `@aws-sdk/client-s3` and
 * `aws s3 cp/ls/mb/rm`. Requests are SigV4-verified (service `s3`, header or presigned);
 * aws-chunked bodies are decoded. Errors are S3's XML.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sha256Hex, verifySigV4 } from '../sigv4.js';
import { BUCKET_RE, type ObjectMeta, type ObjectStore } from './objects.js';

export interface S3Context {
  objects: ObjectStore;
  region: string;
  secretFor: (accessKeyId: string) => string | undefined;
}

class S3Error extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly resource = '',
  ) {
    super(message);
  }
}

const XMLNS = 'http://s3.amazonaws.com/doc/2006-03-01/';
const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const iso = (ms: number): string => new Date(ms).toISOString();

function xml(res: ServerResponse, status: number, body: string, requestId: string): void {
  const data = Buffer.from(`<?xml version="1.0" encoding="UTF-8"?>\n${body}`);
  res.writeHead(status, {
    'content-type': 'application/xml',
    'content-length': data.length,
    'x-amz-request-id': requestId,
  });
  res.end(data);
}

/** Decodes an aws-chunked body (`<hex-size>[;chunk-signature=…]\r\n<data>\r\n…0\r\n[trailers]`). */
export function decodeAwsChunked(body: Buffer): Buffer {
  const parts: Buffer[] = [];
  let p = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', p);
    if (eol < 0) break;
    const size = parseInt(body.subarray(p, eol).toString('ascii').split(';')[0]!, 16);
    if (!size) break;
    parts.push(body.subarray(eol + 2, eol + 2 + size));
    p = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

function objectHeaders(meta: ObjectMeta): Record<string, string | number> {
  return {
    'content-type': meta.contentType,
    etag: meta.etag,
    'last-modified': new Date(meta.lastModified).toUTCString(),
    'accept-ranges': 'bytes',
  };
}

export function handleS3(ctx: S3Context, req: IncomingMessage, rawBody: Buffer, res: ServerResponse): void {
  const requestId = randomUUID().replace(/-/g, '').slice(0, 16).toUpperCase();
  const method = req.method ?? 'GET';
  try {
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const rawPath = qi < 0 ? url : url.slice(0, qi);
    const rawQuery = qi < 0 ? '' : url.slice(qi + 1);
    const q = new URLSearchParams(rawQuery);
    const declared = String(req.headers['x-amz-content-sha256'] ?? '');
    const payloadHash = declared || (q.has('X-Amz-Signature') ? 'UNSIGNED-PAYLOAD' : sha256Hex(rawBody));
    if (
      declared &&
      !declared.startsWith('STREAMING-') &&
      declared !== 'UNSIGNED-PAYLOAD' &&
      declared !== sha256Hex(rawBody)
    ) {
      throw new S3Error(
        400,
        'XAmzContentSHA256Mismatch',
        'The provided x-amz-content-sha256 header does not match what was computed.',
      );
    }
    const auth = verifySigV4(
      { method, path: rawPath, query: rawQuery, headers: req.headers, payloadHash },
      's3',
      ctx.secretFor,
      Date.now(),
      ctx.region,
    );
    if ('kind' in auth) {
      if (auth.kind === 'wrong-region')
        throw q.has('X-Amz-Credential')
          ? new S3Error(
              400,
              'AuthorizationQueryParametersError',
              `Error parsing the X-Amz-Credential parameter; the region '${auth.region}' is wrong; expecting '${auth.expected}'`,
            )
          : new S3Error(
              400,
              'AuthorizationHeaderMalformed',
              `The authorization header is malformed; the region '${auth.region}' is wrong; expecting '${auth.expected}'`,
            );
      if (auth.kind === 'unknown-key')
        throw new S3Error(
          403,
          'InvalidAccessKeyId',
          'The AWS Access Key Id you provided does not exist in our records.',
        );
      if (auth.kind === 'missing') throw new S3Error(403, 'AccessDenied', 'Access Denied');
      throw new S3Error(
        403,
        auth.kind === 'malformed' ? 'AuthorizationHeaderMalformed' : 'SignatureDoesNotMatch',
        auth.message,
      );
    }
    const body =
      declared.startsWith('STREAMING-') ||
      String(req.headers['content-encoding'] ?? '').includes('aws-chunked')
        ? decodeAwsChunked(rawBody)
        : rawBody;
    const segments = rawPath.split('/');
    const bucket = decodeURIComponent(segments[1] ?? '');
    const key = segments.length > 2 ? decodeURIComponent(segments.slice(2).join('/')) : '';
    // A request for a key being written waits for the write (conditional writes stay exact).
    const pending = key ? ctx.objects.pending(bucket, key) : undefined;
    if (pending) {
      void pending.then(() => handleS3(ctx, req, rawBody, res));
      return;
    }
    route(ctx, method, bucket, key, q, req, body, res, requestId);
  } catch (e) {
    sendError(res, e, method, requestId);
  }
}

function sendError(res: ServerResponse, e: unknown, method: string, requestId: string): void {
  const err = e instanceof S3Error ? e : new S3Error(500, 'InternalError', (e as Error).message);
  if (method === 'HEAD') {
    res.writeHead(err.status, { 'x-amz-request-id': requestId });
    res.end();
    return;
  }
  xml(
    res,
    err.status,
    `<Error><Code>${err.code}</Code><Message>${esc(err.message)}</Message>${err.resource ? `<Resource>${esc(err.resource)}</Resource>` : ''}<RequestId>${requestId}</RequestId></Error>`,
    requestId,
  );
}

function route(
  ctx: S3Context,
  method: string,
  bucket: string,
  key: string,
  q: URLSearchParams,
  req: IncomingMessage,
  body: Buffer,
  res: ServerResponse,
  requestId: string,
): void {
  const { objects } = ctx;
  const done = (status: number, headers: Record<string, string | number> = {}): void => {
    res.writeHead(status, { 'x-amz-request-id': requestId, 'content-length': 0, ...headers });
    res.end();
  };
  if (!bucket) {
    if (method !== 'GET')
      throw new S3Error(
        405,
        'MethodNotAllowed',
        'The specified method is not allowed against this resource.',
      );
    const buckets = objects
      .bucketNames()
      .map(
        (b) => `<Bucket><Name>${esc(b.name)}</Name><CreationDate>${iso(b.created)}</CreationDate></Bucket>`,
      )
      .join('');
    return xml(
      res,
      200,
      `<ListAllMyBucketsResult xmlns="${XMLNS}"><Owner><ID>provline-local</ID><DisplayName>provline-local</DisplayName></Owner><Buckets>${buckets}</Buckets></ListAllMyBucketsResult>`,
      requestId,
    );
  }
  const noBucket = (): S3Error =>
    new S3Error(404, 'NoSuchBucket', 'The specified bucket does not exist', `/${bucket}`);
  if (!key) {
    if (method === 'PUT') {
      if (!BUCKET_RE.test(bucket))
        throw new S3Error(400, 'InvalidBucketName', 'The specified bucket is not valid.', `/${bucket}`);
      if (!objects.createBucket(bucket))
        throw new S3Error(
          409,
          'BucketAlreadyOwnedByYou',
          'Your previous request to create the named bucket succeeded and you already own it.',
          `/${bucket}`,
        );
      return done(200, { location: `/${bucket}` });
    }
    if (!objects.hasBucket(bucket)) throw noBucket();
    if (method === 'HEAD') return done(200, { 'x-amz-bucket-region': ctx.region });
    if (method === 'DELETE') {
      if (!objects.deleteBucket(bucket))
        throw new S3Error(409, 'BucketNotEmpty', 'The bucket you tried to delete is not empty', `/${bucket}`);
      return done(204);
    }
    if (method === 'GET' && q.has('location')) {
      return xml(
        res,
        200,
        `<LocationConstraint xmlns="${XMLNS}">${ctx.region === 'us-east-1' ? '' : ctx.region}</LocationConstraint>`,
        requestId,
      );
    }
    if (method === 'GET') return list(ctx, bucket, q, res, requestId);
    if (method === 'POST' && q.has('delete')) {
      const keys = [...body.toString('utf8').matchAll(/<Key>([\s\S]*?)<\/Key>/g)].map((m) =>
        unescapeXml(m[1]!),
      );
      for (const k of keys) objects.delete(bucket, k);
      const quiet = /<Quiet>true<\/Quiet>/.test(body.toString('utf8'));
      return xml(
        res,
        200,
        `<DeleteResult xmlns="${XMLNS}">${quiet ? '' : keys.map((k) => `<Deleted><Key>${esc(k)}</Key></Deleted>`).join('')}</DeleteResult>`,
        requestId,
      );
    }
    throw new S3Error(405, 'MethodNotAllowed', 'The specified method is not allowed against this resource.');
  }
  if (!objects.hasBucket(bucket)) throw noBucket();
  const uploadId = q.get('uploadId');
  const contentType = String(req.headers['content-type'] ?? 'binary/octet-stream');
  if (method === 'POST' && q.has('uploads')) {
    const id = objects.startUpload(bucket, key, contentType);
    return xml(
      res,
      200,
      `<InitiateMultipartUploadResult xmlns="${XMLNS}"><Bucket>${esc(bucket)}</Bucket><Key>${esc(key)}</Key><UploadId>${id}</UploadId></InitiateMultipartUploadResult>`,
      requestId,
    );
  }
  if (uploadId !== null) {
    if (!objects.upload(uploadId))
      throw new S3Error(404, 'NoSuchUpload', 'The specified upload does not exist.');
    if (method === 'PUT')
      return done(200, { etag: objects.putPart(uploadId, Number(q.get('partNumber')), body) });
    if (method === 'DELETE') {
      objects.abortUpload(uploadId);
      return done(204);
    }
    if (method === 'POST') {
      const parts = [...body.toString('utf8').matchAll(/<PartNumber>(\d+)<\/PartNumber>/g)].map((m) =>
        Number(m[1]),
      );
      const meta = objects.completeUpload(uploadId, parts);
      return xml(
        res,
        200,
        `<CompleteMultipartUploadResult xmlns="${XMLNS}"><Location>/${esc(bucket)}/${esc(key)}</Location><Bucket>${esc(bucket)}</Bucket><Key>${esc(key)}</Key><ETag>${esc(meta.etag)}</ETag></CompleteMultipartUploadResult>`,
        requestId,
      );
    }
  }
  if (method === 'PUT') {
    // Conditional writes: If-None-Match: * (only when no object has the key yet) and
    // If-Match: <etag> (only over the object with that ETag; 404 when there is none).
    if (String(req.headers['if-none-match'] ?? '').trim() === '*' && objects.head(bucket, key))
      throw new S3Error(
        412,
        'PreconditionFailed',
        'At least one of the pre-conditions you specified did not hold',
        `/${bucket}/${key}`,
      );
    const ifMatch = req.headers['if-match'];
    if (ifMatch !== undefined) {
      const current = objects.head(bucket, key);
      if (!current)
        throw new S3Error(404, 'NoSuchKey', 'The specified key does not exist.', `/${bucket}/${key}`);
      const unquote = (t: string): string => t.trim().replace(/^"|"$/g, '');
      if (unquote(String(ifMatch)) !== '*' && unquote(String(ifMatch)) !== unquote(current.etag))
        throw new S3Error(
          412,
          'PreconditionFailed',
          'At least one of the pre-conditions you specified did not hold',
          `/${bucket}/${key}`,
        );
    }
    objects.putAsync(bucket, key, body, contentType).then(
      (meta) => done(200, { etag: meta.etag }),
      (e: unknown) => sendError(res, e, method, requestId),
    );
    return;
  }
  if (method === 'DELETE') {
    objects.delete(bucket, key);
    return done(204);
  }
  if (method === 'GET' || method === 'HEAD') {
    const meta = objects.head(bucket, key);
    if (!meta) throw new S3Error(404, 'NoSuchKey', 'The specified key does not exist.', `/${bucket}/${key}`);
    if (method === 'HEAD') return done(200, { ...objectHeaders(meta), 'content-length': meta.size });
    const { data } = objects.get(bucket, key)!;
    const range = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? ''));
    if (range && data.length > 0) {
      let start = range[1] ? Number(range[1]) : Math.max(0, data.length - Number(range[2]));
      let end = range[1] && range[2] ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
      if (start >= data.length)
        throw new S3Error(416, 'InvalidRange', 'The requested range is not satisfiable');
      if (!range[1]) end = data.length - 1;
      start = Math.max(0, start);
      res.writeHead(206, {
        'x-amz-request-id': requestId,
        ...objectHeaders(meta),
        'content-length': end - start + 1,
        'content-range': `bytes ${start}-${end}/${data.length}`,
      });
      res.end(data.subarray(start, end + 1));
      return;
    }
    res.writeHead(200, {
      'x-amz-request-id': requestId,
      ...objectHeaders(meta),
      'content-length': data.length,
    });
    res.end(data);
    return;
  }
  throw new S3Error(405, 'MethodNotAllowed', 'The specified method is not allowed against this resource.');
}

function unescapeXml(s: string): string {
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');
}

function list(
  ctx: S3Context,
  bucket: string,
  q: URLSearchParams,
  res: ServerResponse,
  requestId: string,
): void {
  const v2 = q.get('list-type') === '2';
  const prefix = q.get('prefix') ?? '';
  const delimiter = q.get('delimiter') ?? '';
  const max = Math.min(1000, Number(q.get('max-keys') ?? '1000'));
  const urlEncode = q.get('encoding-type') === 'url';
  const enc = (s: string): string => esc(urlEncode ? encodeURIComponent(s).replace(/%2F/g, '/') : s);
  const token = q.get('continuation-token');
  const after = v2
    ? token
      ? Buffer.from(token, 'base64url').toString('utf8')
      : (q.get('start-after') ?? '')
    : (q.get('marker') ?? '');
  const r = ctx.objects.list(bucket, { prefix, delimiter, after, max });
  const contents = r.objects
    .map(
      (o) =>
        `<Contents><Key>${enc(o.key)}</Key><LastModified>${iso(o.lastModified)}</LastModified><ETag>${esc(o.etag)}</ETag><Size>${o.size}</Size><StorageClass>STANDARD</StorageClass></Contents>`,
    )
    .join('');
  const prefixes = r.prefixes
    .map((p) => `<CommonPrefixes><Prefix>${enc(p)}</Prefix></CommonPrefixes>`)
    .join('');
  const head = `<Name>${esc(bucket)}</Name><Prefix>${enc(prefix)}</Prefix>${delimiter ? `<Delimiter>${enc(delimiter)}</Delimiter>` : ''}<MaxKeys>${max}</MaxKeys>${urlEncode ? '<EncodingType>url</EncodingType>' : ''}<IsTruncated>${r.truncated}</IsTruncated>`;
  const paging = v2
    ? `<KeyCount>${r.objects.length + r.prefixes.length}</KeyCount>${token ? `<ContinuationToken>${esc(token)}</ContinuationToken>` : ''}${r.truncated ? `<NextContinuationToken>${Buffer.from(r.last).toString('base64url')}</NextContinuationToken>` : ''}`
    : `<Marker>${enc(after)}</Marker>${r.truncated ? `<NextMarker>${enc(r.last)}</NextMarker>` : ''}`;
  xml(
    res,
    200,
    `<ListBucketResult xmlns="${XMLNS}">${head}${paging}${contents}${prefixes}</ListBucketResult>`,
    requestId,
  );
}
